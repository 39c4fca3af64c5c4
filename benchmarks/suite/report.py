"""The benchmark's markdown report and CSV tables, from the one results dict `python -m benchmarks` builds."""

from __future__ import annotations

import csv
from pathlib import Path

PYTORCH_LABEL = "PyTorch eager fp32"

#: streaming mode, one thread: the model's time per window against PyTorch eager's, side by side
SPEEDUP_TARGETS = {"ExecuTorch int8": 10.0, "LiteRT int8": 20.0}
END_TO_END_TARGET = 2.0  # end to end per window (stream push + poll) within this factor of the programs alone
SKIP_ONE_TARGET = 0.35  # one sensor of all of them costs at most this share of all present
FLOOR_TARGET = 20.0


def _us(v: float | None) -> str:
    return "—" if v is None else f"{v:,.1f}"


def write_csv(path: Path, rows: list[dict]) -> Path:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def latency_rows(r: dict) -> list[dict]:
    """One row per thread setting and configuration claimed, measured or skipped (never a zero): the streaming
    numbers (the headline), end to end, and the warm ones beside them."""
    rows = []
    for setting, lat in r["latency"].items():
        warm = lat["warm"]
        for label in lat["claimed"]:
            if label in lat["skipped"] or label not in lat["rows"]:
                rows.append({"threads": setting, "configuration": label, "status": "skipped",
                             "reason": lat["skipped"].get(label, "not measured")})
                continue
            s, sp = lat["rows"][label], lat["spread"][label]
            speed, wspeed = lat["speedup"].get(label), warm["speedup"].get(label)
            prog, end = lat["programs_only"].get(label, {}).get("median_us"), lat["end_to_end"].get(label, {}).get("median_us")
            rows.append({"threads": setting, "configuration": label, "status": "measured",
                         "environment": lat["configs"].get(label, {}).get("environment", "main"),
                         "median_us": _r(s["median_us"]), "p90_us": _r(s["p90_us"]), "p99_us": _r(s["p99_us"]),
                         "runs": s["runs"], "repeats": sp["repeats"], "repeat_min_us": _r(sp["min_us"]),
                         "repeat_max_us": _r(sp["max_us"]), "noisy": sp["noisy"],
                         "speedup_vs_pytorch": _r(speed["median"]) if speed else None,
                         "speedup_via": speed.get("via") if speed else None,
                         "programs_only_us": _r(prog), "end_to_end_us": _r(end),
                         "end_to_end_x_programs": _r(end / prog) if end and prog else None,
                         "warm_median_us": _r(warm["rows"].get(label, {}).get("median_us")),
                         "warm_speedup_vs_pytorch": _r(wspeed["median"]) if wspeed else None,
                         "warm_programs_only_us": _r(warm["programs_only"].get(label, {}).get("median_us"))})
    return rows


def skip_rows(r: dict) -> list[dict]:
    rows = []
    for label, table in r["skip"].items():
        full = table[r["modalities_key"]]["median_us"]
        for subset, v in table.items():
            fl = r["floor"]["subsets"].get(subset, {}) if r["floor"].get("subsets") else {}
            rows.append({"configuration": label, "sensors_present": subset, "encoders": subset.count("+") + 1,
                         "median_us": round(v["median_us"], 2), "p90_us": round(v["p90_us"], 2), "p99_us": round(v["p99_us"], 2),
                         "runs": v["runs"], "of_all_present": round(v["median_us"] / full, 3), "macs": fl.get("macs")})
    return rows


def render(r: dict, plots: dict[str, str], plot_note: str | None) -> str:
    m = r["machine"]
    v = m["versions"]
    one = r["latency"]["1"]
    clock = f"{m['clock_ghz']:.2f}" if m["clock_ghz"] else "?"
    lines = [
        f"# Benchmarks: {r['name']}", "",
        f"`{r['command']}` ({r['mode']} mode, {r['seconds']:.0f} s) on {r['date']}.", "",
        f"**Machine:** {m['cpu']}{' (' + m['board'] + ')' if m['board'] and m['board'] != m['cpu'] else ''}, {m['arch']}, "
        f"{m['cores']} cores, clock {clock} GHz ({m['clock_source']}); {m['os']}, kernel {m['kernel']}.",
        "**Packages:** " + ", ".join(f"{k} {val or 'not installed'}" for k, val in v.items()) + ".",
        f"**Windows:** {one['windows']}. **Bundles:** " + ", ".join(f"`{b}`" for b in r["bundles"]) + ".", "",
    ]
    lines += _targets(r) + [""]
    for setting, lat in r["latency"].items():
        t = "one thread" if setting == "1" else "each runtime's default threads" + (
            f" (torch uses {lat['torch_threads']})" if lat.get("torch_threads") else "")
        table = [x for x in latency_rows(r) if x["threads"] == setting]
        lines += [f"## Per-window latency, streaming, batch 1, {t}, all sensors present", "",
                  "Window by window: every configuration and measure once per window, in a new random order each "
                  "window, so each call follows other work, as in a live loop. Median, p90 and p99 are each repeat's, "
                  "then the median over "
                  f"{lat['repeats']} repeats (each in a fresh process); runs counts them all; repeat min-max is the "
                  "spread of the repeats' medians, **noisy** above 20%. *Model*: `EdgeModel.predict` on one window "
                  "(normalise, quantise, the programs, dequantise, softmax; PyTorch: the network's forward on "
                  "normalised tensors). *Programs only*: the backend's calls on prepared inputs. *End to end*: one "
                  "hop of samples of every sensor pushed into the streaming classifier and its prediction polled.", "",
                  "| configuration | model median us | p90 us | p99 us | runs | repeats min-max us | speed-up vs PyTorch "
                  "| programs only us | end to end us | end to end / programs |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in table:
            if row["status"] == "skipped":
                lines.append(f"| {row['configuration']} | skipped: {row['reason']} | | | | | | | | |")
                continue
            sp = lat["speedup"].get(row["configuration"])
            speed = f"{sp['median']:.1f}x ({sp['min']:.1f}-{sp['max']:.1f})" if sp else ""
            speed += f" via {sp['via']}" if sp and sp.get("via") else ""
            noisy = " **noisy**" if row["noisy"] else ""
            ratio = f"{row['end_to_end_x_programs']:.2f}x" if row["end_to_end_x_programs"] else "—"
            lines.append(f"| {row['configuration']} | {_us(row['median_us'])} | {_us(row['p90_us'])} | {_us(row['p99_us'])} | "
                         f"{row['runs']:,} | {_us(row['repeat_min_us'])}-{_us(row['repeat_max_us'])}{noisy} | {speed} | "
                         f"{_us(row['programs_only_us'])} | {_us(row['end_to_end_us'])} | {ratio} |")
        lines += ["", f"### Warm, {t}: blocks of calls in a row (the earlier way of timing; caches stay warm)", "",
                  "| configuration | model median us | speed-up vs PyTorch | programs only us | streaming / warm |",
                  "|---|---|---|---|---|"]
        for row in table:
            if row["status"] == "skipped" or row["warm_median_us"] is None:
                continue
            w = lat["warm"]["speedup"].get(row["configuration"])
            speed = f"{w['median']:.1f}x ({w['min']:.1f}-{w['max']:.1f})" if w else ""
            lines.append(f"| {row['configuration']} | {_us(row['warm_median_us'])} | {speed} | "
                         f"{_us(row['warm_programs_only_us'])} | {row['median_us'] / row['warm_median_us']:.2f}x |")
        vs = lat.get("vs_litert", {})
        if vs:
            lines += ["", "tflite-runtime runs in its own environment (numpy<2) beside LiteRT on the same .tflite: "
                      + ", ".join(f"{k} takes {1 / v:.1f}x LiteRT's time per window" for k, v in vs.items())
                      + " (side by side); its speed-up over PyTorch is that ratio times LiteRT's, each taken within a "
                      "repeat."]
        lines.append("")
    lines += _floor(r) + _skip(r) + _sizes(r) + _footprint(r) + _bridge(r)
    lines += ["## Plots", ""]
    if plot_note:
        lines += [plot_note, ""]
    for title, name in plots.items():
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    if r.get("accuracy_source"):
        lines += [f"Accuracy plots are drawn from {r['accuracy_source']} (measured by `python -m benchmarks.accuracy`, "
                  "not rerun here).", ""]
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _targets(r: dict) -> list[str]:
    one = r["latency"]["1"]
    out = ["## Targets (one thread, streaming, side by side in each repeat)", ""]
    for label, target in SPEEDUP_TARGETS.items():
        sp, warm = one["speedup"].get(label), one["warm"]["speedup"].get(label)
        if sp is None:
            out.append(f"- {label} >= {target:g}x faster than PyTorch eager: not measured here "
                       f"({one['skipped'].get(label) or one['skipped'].get(PYTORCH_LABEL)}).")
            continue
        out.append(f"- {label} >= {target:g}x faster than PyTorch eager: {_verdict(sp['median'] >= target)}, "
                   f"{sp['median']:.1f}x (repeats {sp['min']:.1f}-{sp['max']:.1f}x)"
                   + (f"; warm {warm['median']:.1f}x." if warm else "."))
    ends = [(label, one["end_to_end"][label]["median_us"] / one["programs_only"][label]["median_us"])
            for label in one["rows"] if label in one["end_to_end"] and label in one["programs_only"]]
    for label, ratio in ends:
        out.append(f"- {label}: end to end per window within {END_TO_END_TARGET:g}x of the programs alone: "
                   f"{_verdict(ratio <= END_TO_END_TARGET)}, {ratio:.2f}x ({one['end_to_end'][label]['median_us']:,.1f} "
                   f"against {one['programs_only'][label]['median_us']:,.1f} us).")
    for label, s in r.get("skip_summary", {}).items():
        out.append(f"- Skip curve, {label}: one sensor of {s['n']} costs <= {SKIP_ONE_TARGET:.0%} of all {s['n']}: "
                   f"{_verdict(s['one'] <= SKIP_ONE_TARGET)}, {s['one']:.0%} on average over the sensors "
                   f"({s['one_min']:.0%}-{s['one_max']:.0%}; proportional would be {1 / s['n']:.0%}); a window costs "
                   f"{s['fixed_us']:.0f} us + {s['per_encoder_us']:.0f} us per encoder run (least squares over the "
                   f"subsets, R² {s['r2']:.2f}), the fixed part being the aggregator and the per-window Python; "
                   f"{s['n'] - 1} sensors cost {s['all_but_one']:.0%}.")
    calls = r["modalities_key"].count("+") + 2  # an encoder per sensor and the aggregator
    for label, ratio in r["floor"].get("ratios", {}).items():
        out.append(f"- {label} within {FLOOR_TARGET:g}x of the MAC floor: {_verdict(ratio['per_window'] <= FLOOR_TARGET)}, "
                   f"{ratio['per_window']:.1f}x per window ({ratio['programs_only']:.1f}x for the programs alone; the "
                   f"rest is the Python around {calls} calls).")
    noisy = [f"{k} (threads {t})" for t, lat in r["latency"].items() for k, sp in lat["spread"].items() if sp["noisy"]]
    out.append(f"- Repeats agree: {'**no**, noisy: ' + ', '.join(noisy) if noisy else 'yes'} "
               "(a row is noisy when its repeats' medians spread over 20% of their median).")
    return out


def _floor(r: dict) -> list[str]:
    f = r["floor"]
    if "skipped" in f:
        return ["## Physical floor", "", f"Skipped: {f['skipped']}", ""]
    m = r["machine"]
    out = ["## Physical floor: multiply-accumulates per window against the CPU's peak", "",
           f"{f['macs_all']:,} MACs per window with every sensor present (from `{f['source']}`: "
           + ", ".join(f"{k} {v:,}" for k, v in f["programs"].items()) + "). "
           f"One core's fp32 peak: {m['clock_ghz']:.2f} GHz x {m['fp32_macs_per_cycle']} MACs/cycle ({m['simd']}) = "
           f"{f['peak_gmacs']:.1f} GMAC/s, so the floor is **{f['floor_us']:.1f} us** a window.", "",
           "| configuration (one thread) | measured per window us | x floor | programs only us | x floor |", "|---|---|---|---|---|"]
    for label, ratio in f.get("ratios", {}).items():
        out.append(f"| {label} | {ratio['per_window_us']:,.1f} | {ratio['per_window']:.1f}x | {ratio['programs_only_us']:,.1f} | "
                   f"{ratio['programs_only']:.1f}x |")
    sizes = [v for v in f["programs"].values() if v]
    out += ["", f"Why the gap: a window is {len(f['programs'])} programs of {min(sizes) / 1e3:,.0f}k-{max(sizes) / 1e3:,.0f}k "
            "MACs each, too small to fill the SIMD pipes (per-op "
            "setup, padding and transposes between convolutions, memory traffic), and the per-window time also holds "
            "the Python around each call (normalisation, quantisation, checks, dequantisation, softmax). The floor "
            "assumes the reported clock; a core that boosts higher has a lower floor.", ""]
    return out


def _skip(r: dict) -> list[str]:
    out = []
    rows = skip_rows(r)
    for label in r["skip"]:
        out += [f"## Encoder skipping, {label}, one thread: per-window latency by sensors present", "",
                "| sensors present | encoders | median us | p90 us | of all-present | MACs |", "|---|---|---|---|---|---|"]
        for row in [x for x in rows if x["configuration"] == label]:
            out.append(f"| {row['sensors_present']} | {row['encoders']} | {row['median_us']:,.1f} | {row['p90_us']:,.1f} | "
                       f"{row['of_all_present']:.0%} | {row['macs'] if row['macs'] is None else format(row['macs'], ',')} |")
        out.append("")
    return out


def _sizes(r: dict) -> list[str]:
    out = ["## Bundles: size and held-out accuracy (from each bundle's export-time verification)", "",
           "| bundle | precision | backend | bytes | KiB | macro-F1 PyTorch fp32 | macro-F1 bundle | argmax agreement |",
           "|---|---|---|---|---|---|---|---|"]
    for row in r["sizes"]:
        f = lambda k: "—" if row.get(k) is None else f"{row[k]:.4f}"  # noqa: E731
        out.append(f"| `{row['bundle']}` | {row['precision']} | {row['backend']} | {row['bytes']:,} | {row['bytes'] / 1024:.1f} | "
                   f"{f('macro_f1_fp32')} | {f('macro_f1_backend')} | {f('argmax_agreement')} |")
    return out + [""]


def _footprint(r: dict) -> list[str]:
    f = r["footprint"]
    if "skipped" in f:
        return ["## Runtime process", "", f"Skipped: {f['skipped']}", ""]
    return ["## Runtime process (no torch)", "",
            f"A fresh Python on {f['backend']} with the int8 bundle: import of crossl_edge.runtime (with numpy) "
            f"{f['import_s']:.3f} s; import, sha256 checks and load {f['import_and_load_s']:.3f} s; peak resident memory "
            f"after 200 predictions {f['max_rss_mb']:.0f} MB; torch imported: {f['torch_imported']}.", ""]


def _bridge(r: dict) -> list[str]:
    b = r["bridge"]
    out = ["## Bridge under the simulators", ""]
    if "skipped" in b:
        return out + [f"Skipped: {b['skipped']}", ""]
    out += ["| protocol | channels | chunk bytes | frames | frames/s parsed |", "|---|---|---|---|---|"]
    for p in b["parse"]:
        out.append(f"| {p['protocol']} | {p['channels']} | {p['chunk_bytes']:,} | {p['frames']:,} | {p['frames_per_s']:,.0f} |")
    lat = b["latency"]
    out.append("")
    if "skipped" in lat:
        out.append(f"Frame-to-prediction latency: skipped ({lat['skipped']}).")
    elif not lat.get("latency_ms") or lat.get("last_ms") is None:
        out.append(f"Frame-to-prediction latency: no prediction in {lat['seconds']:.0f} s (died: {lat['died']}).")
    else:
        ms = lat["latency_ms"]
        out.append(f"Frame arrival to prediction, every sensor of the bundle simulated at real time for {lat['seconds']:.0f} s "
                   f"({lat['backend']}, a prediction a second): median {ms['median']:.2f} ms, p99 {ms['p99']:.2f} ms, "
                   f"max {ms['max']:.2f} ms over {ms['n']} predictions in the steady state. Left out: the first prediction "
                   f"({lat['first_ms']:.1f} ms: it waits for every sensor's first frames and the backend's first call) and "
                   f"the last ({lat['last_ms']:.1f} ms: the sensors are being stopped). Every sensor's ledger balanced: "
                   f"{lat['balanced']}.")
    return out + [""]
