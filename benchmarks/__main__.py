"""One benchmark command for a laptop and a board: `python -m benchmarks [--quick]` (or `make bench`).

Measures on the machine it runs on and writes benchmarks/results/<machine-name>/ (…-quick/ in quick mode):
report.md, results.json, machine.json, latency.csv, skip_curve.csv, sizes.csv and PNG plots:
- per-window latency, batch 1, at one thread and at each runtime's default: PyTorch eager fp32, ExecuTorch
  fp32 and int8, LiteRT fp32 and int8, tflite-runtime fp32 and int8; median/p90/p99 and run counts, repeated
  in fresh processes with the repeats' spread. Streaming (the headline): window by window, configurations in a
  new random order each window, as in a live loop; warm: blocks of calls in a row. Per configuration
  the model, its programs alone, and end to end (samples pushed into the streaming classifier, its prediction
  polled); every subset of sensors (the skip curve);
- tflite-runtime needs numpy<2, so its rows come from the same worker run in a venv of its own, made once
  under the cache folder (benchmarks/suite/tflite_env.py; --tflite-python to bring one, --no-tflite-runtime
  to leave the rows out, said as skipped);
- bundle sizes; import time and peak memory of the torch-free runtime process;
- the physical floor: MACs per window (read from the .tflite) against the CPU's peak;
- bridge parsing throughput and frame-to-prediction latency under the simulators;
- the accuracy benchmark's tables as plots (macro-F1 against labels; macro-F1 per sensor subset).
Rows that cannot run here (no torch on a board, a backend not installed, no fp32 bundle) are reported as
skipped, with the reason, never as zeros.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.suite import bridge, floor, footprint, machine, plots, report, tflite_env
from benchmarks.suite.latency import BACKEND_LABELS, PYTORCH, config_labels
from benchmarks.suite.timing import spread
from crossl_edge.paths import EXPORT_ROOT
from crossl_edge.runtime import Bundle, BundleError, load_bundle
from crossl_edge.runtime.backends import installed

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
ACCURACY = RESULTS / "accuracy"
DEFAULT_BUNDLES = (EXPORT_ROOT / "demo-int8", EXPORT_ROOT / "demo-fp32")
#: (repeats, timed runs, warm-up runs, runs per sensor subset, windows, extra bridge seconds, parsed frames)
MODES = {"quick": (2, 300, 30, 60, 32, 5.0, 50_000), "full": (3, 2000, 200, 400, 64, 60.0, 200_000)}


def latency_worker(bundles: list[Path], threads: str, runs: int, warmup: int, subset_runs: int, windows: int,
                   run: str | None, out: Path, python: str | Path = sys.executable,
                   backends: str | None = None) -> dict:
    cmd = [str(python), "-m", "benchmarks.suite.latency", "--threads", threads, "--runs", str(runs),
           "--warmup", str(warmup), "--subset-runs", str(subset_runs), "--windows", str(windows), "--out", str(out)]
    for b in bundles:
        cmd += ["--bundle", str(b)]
    if run:
        cmd += ["--run", run]
    if backends:
        cmd += ["--backends", backends]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT.parent), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"the latency worker failed ({' '.join(cmd)}):\n{p.stderr[-3000:]}")
    return json.loads(out.read_text())


STATS = ("median_us", "p90_us", "p99_us")


def _shown(path) -> str:
    """A path as results name it: relative to the repository when inside it, so committed results hold no
    machine's folders."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT.parent)) if p.is_relative_to(ROOT.parent) else str(path)


def _table(reps: list[dict], pytorch: list[dict] | None = None) -> dict:
    """Repeats of one mode: per configuration the median over repeats of median/p90/p99 (all runs counted), the
    repeats' spread, the programs alone and end to end (medians), and the speed-up over PyTorch taken within each
    repeat (side by side). `pytorch`: repeats that hold the PyTorch row, when `reps` do not."""
    rows, spreads, speedup, programs, ends = {}, {}, {}, {}, {}
    for label in reps[0]["rows"]:
        per = [r["rows"][label] for r in reps]
        rows[label] = {k: float(np.median([p[k] for p in per])) for k in STATS} | {"runs": int(sum(p["runs"] for p in per))}
        spreads[label] = spread([p["median_us"] for p in per])
        if label in reps[0].get("programs_only", {}):
            programs[label] = {"median_us": float(np.median([r["programs_only"][label]["median_us"] for r in reps]))}
        if label in reps[0].get("end_to_end", {}):
            ends[label] = {k: float(np.median([r["end_to_end"][label][k] for r in reps])) for k in STATS}
        if PYTORCH in reps[0]["rows"] and label != PYTORCH:
            ratios = [r["rows"][PYTORCH]["median_us"] / r["rows"][label]["median_us"] for r in reps]
            speedup[label] = {"median": float(np.median(ratios)), "min": float(min(ratios)), "max": float(max(ratios))}
    return {"rows": rows, "spread": spreads, "speedup": speedup, "programs_only": programs, "end_to_end": ends}


def _chain(table: dict, side: dict, main_reps: list[dict], side_reps: list[dict], key) -> None:
    """Carry the side run's tflite-runtime rows into `table`, with their speed-up over the main run's PyTorch: the
    product of two side-by-side ratios per repeat, PyTorch / LiteRT (main) and LiteRT / tflite-runtime (side)."""
    for label, row in side["rows"].items():
        if not label.startswith(BACKEND_LABELS["tflite-runtime"]):
            continue
        for part in ("rows", "spread", "programs_only", "end_to_end"):
            if label in side[part]:
                table[part][label] = side[part][label]
        via = label.replace(BACKEND_LABELS["tflite-runtime"], BACKEND_LABELS["litert"])
        ratios = [key(m)[PYTORCH]["median_us"] / key(m)[via]["median_us"] * key(s)[via]["median_us"] / key(s)[label]["median_us"]
                  for m, s in zip(main_reps, side_reps)
                  if PYTORCH in key(m) and via in key(m) and via in key(s) and label in key(s)]
        vs = [key(s)[via]["median_us"] / key(s)[label]["median_us"] for s in side_reps if via in key(s)]
        if ratios:
            table["speedup"][label] = {"median": float(np.median(ratios)), "min": float(min(ratios)),
                                       "max": float(max(ratios)), "via": via}
        if vs:
            table.setdefault("vs_litert", {})[label] = float(np.median(vs))


def combine(repeats: list[dict], side: list[dict] | None = None, side_skipped: str | None = None) -> dict:
    """Repeats of one thread setting (and those of the tflite-runtime environment, `side`) into one result:
    streaming (the headline) at the top level, warm under "warm"."""
    first = repeats[0]
    streaming, warm = _table(repeats), _table([r["warm"] for r in repeats])
    skipped = dict(first["skipped"])
    tflite = [label for label, backend, _ in config_labels() if backend == "tflite-runtime"]
    if side:
        _chain(streaming, _table(side), repeats, side, lambda r: r["rows"])
        _chain(warm, _table([r["warm"] for r in side]), repeats, side, lambda r: r["warm"]["rows"])
    for label in tflite:
        if label in streaming["rows"]:
            skipped.pop(label, None)
        elif side:
            skipped[label] = side[0]["skipped"].get(label, "not measured in the tflite-runtime environment")
        elif side_skipped:
            skipped[label] = side_skipped
    skip = {label: {sub: {k: float(np.median([r["skip"][label][sub][k] for r in repeats])) for k in STATS}
                    | {"runs": int(sum(r["skip"][label][sub]["runs"] for r in repeats))} for sub in table}
            for label, table in first["skip"].items()}
    configs = {**first["configs"], **{k: v | {"environment": "tflite-runtime venv (numpy<2)"}
                                      for k, v in (side[0]["configs"] if side else {}).items() if k in tflite}}
    configs = {k: v | ({"bundle": _shown(v["bundle"])} if "bundle" in v else {}) for k, v in configs.items()}
    return {"claimed": [c[0] for c in config_labels()], **streaming, "warm": warm, "skipped": skipped,
            "configs": configs, "repeats": len(repeats), "windows": first["windows"],
            "torch_threads": first["torch_threads"], "modalities": first["modalities"], "skip": skip}


def floor_section(bundles: list[Bundle], lat_one: dict, m: dict) -> dict:
    from crossl_edge.spec import modality_subsets

    bundle = next((b for b in bundles if "litert" in b.manifest.backends), None)
    if bundle is None:
        return {"skipped": "no bundle with a .tflite program to count multiply-accumulates in"}
    macs = floor.program_macs(bundle.program_bytes("litert"))
    names = bundle.manifest.modality_names
    subsets = floor.floor_table(macs, list(modality_subsets(names)), m)
    all_key = "+".join(names)
    peak = floor.peak_macs_per_s(m)
    if peak is None:
        return {"skipped": "the CPU clock is not known here", "programs": macs}
    fl = subsets[all_key]["floor_us"]
    ratios = {label: {"per_window_us": lat_one["rows"][label]["median_us"], "per_window": lat_one["rows"][label]["median_us"] / fl,
                      "programs_only_us": lat_one["programs_only"][label]["median_us"],
                      "programs_only": lat_one["programs_only"][label]["median_us"] / fl}
              for label in lat_one["rows"] if label in lat_one["programs_only"]}
    return {"source": _shown(bundle.file("litert")), "programs": macs, "macs_all": subsets[all_key]["macs"],
            "peak_gmacs": peak / 1e9, "floor_us": fl, "subsets": subsets, "ratios": ratios}


def skip_summary(skip: dict, names: list[str]) -> dict:
    """Mean share of the all-present latency with one sensor present, and with all but one."""
    n = len(names)
    out = {}
    for label, table in skip.items():
        full = table["+".join(names)]["median_us"]
        share = lambda k: float(np.mean([v["median_us"] / full for s, v in table.items() if s.count("+") + 1 == k]))  # noqa: E731
        if n > 1:
            counts = np.array([s.count("+") + 1 for s in table], dtype=float)
            med = np.array([v["median_us"] for v in table.values()])
            per_encoder, fixed = np.polyfit(counts, med, 1)
            r2 = 1 - np.sum((med - (fixed + per_encoder * counts)) ** 2) / np.sum((med - med.mean()) ** 2)
            singles = [v["median_us"] / full for s, v in table.items() if "+" not in s]
            out[label] = {"n": n, "one": share(1), "one_min": float(min(singles)), "one_max": float(max(singles)),
                          "all_but_one": share(n - 1), "fixed_us": float(fixed), "per_encoder_us": float(per_encoder),
                          "r2": float(r2)}
    return out


def sizes(bundles: list[Bundle]) -> list[dict]:
    rows = []
    for bundle in bundles:
        results = bundle.manifest.raw.get("verification", {}).get("results", {})
        for backend, entry in bundle.manifest.backends.items():
            a = results.get(backend, {})
            rows.append({"bundle": _shown(bundle.path), "precision": bundle.manifest.precision, "backend": backend, "bytes": entry.bytes,
                         "macro_f1_fp32": a.get("macro_f1_fp32"), "macro_f1_backend": a.get("macro_f1_backend"),
                         "argmax_agreement": a.get("argmax_agreement")})
    return rows


def draw(r: dict, out: Path, accuracy_root: Path) -> tuple[dict[str, str], str | None]:
    if not plots.available():
        return {}, ("Plots skipped: matplotlib is not installed here (`pip install '.[bench]'`); every table above "
                    "was still measured.")
    made = {"Per-window latency": plots.latency_bars(r["latency"], out / "latency.png").name}
    if r["skip"]:
        made["Encoder skipping"] = plots.skip_curve(r["skip"], out / "skip_curve.png").name
    for key, runs in plots.accuracy_runs(accuracy_root).items():
        slug = f"{key[0]}_{key[1].replace(':', '_').replace('@', '-').replace('+', '-')}"
        made[f"Accuracy, {key[0]} ({key[1]})"] = plots.accuracy_curve(key, runs, out / f"accuracy_{slug}.png").name
        made[f"Missing sensors, {key[0]} ({key[1]})"] = plots.missing_heatmap(key, runs, out / f"missing_{slug}.png").name
    return made, None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true", help="fewer runs and repeats: a couple of minutes")
    p.add_argument("--bundle", action="append", default=None,
                   help="bundle folder to benchmark, repeat for int8 and fp32 (default: export/demo-int8 and export/demo-fp32)")
    p.add_argument("--run", default=None, help="run folder for the PyTorch row (default: the bundle's source run)")
    p.add_argument("--name", default=None, help="machine name for the results folder (default: from the CPU or board)")
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results/<machine-name>[-quick])")
    p.add_argument("--repeats", type=int, default=None, help="latency repeats, each in a fresh process")
    p.add_argument("--runs", type=int, default=None, help="timed runs per configuration and repeat")
    p.add_argument("--bridge-s", type=float, default=None, help="seconds of real-time bridge run beyond one window")
    p.add_argument("--threads", type=lambda t: [v.strip() for v in t.split(",") if v.strip()], default=["1", "default"],
                   help="thread settings to time, from 1 and default (each runtime's own choice), comma-separated "
                   "(default: both; the targets are read at one thread, so 1 alone is the short run)")
    p.add_argument("--accuracy", default=str(ACCURACY), help="accuracy benchmark results to plot (default: %(default)s)")
    tfl = p.add_mutually_exclusive_group()
    tfl.add_argument("--tflite-python", default=None, metavar="PYTHON",
                     help="a Python with tflite-runtime 2.14, ai-edge-litert and numpy<2 for the tflite-runtime rows "
                     f"(default: the venv in {tflite_env.default_dir()}, made on first use; see benchmarks/suite/tflite_env.py)")
    tfl.add_argument("--no-tflite-runtime", action="store_true", help="leave the tflite-runtime rows out (said as skipped)")
    args = p.parse_args(argv)
    if "1" not in args.threads or set(args.threads) - {"1", "default"}:
        p.error(f"--threads: {','.join(args.threads)}; give 1, or 1,default (the targets are read at one thread)")

    mode = "quick" if args.quick else "full"
    repeats, runs, warmup, subset_runs, n_windows, bridge_s, parse_n = MODES[mode]
    repeats, runs = args.repeats or repeats, args.runs or runs
    bridge_s = bridge_s if args.bridge_s is None else args.bridge_s
    subset_runs = max(20, min(subset_runs, runs // 4)) if args.runs else subset_runs
    bundles = [Path(b) for b in args.bundle] if args.bundle else [b for b in DEFAULT_BUNDLES if (b / "manifest.json").is_file()]
    missing = [b for b in bundles if not (b / "manifest.json").is_file()]
    if not bundles or missing:
        print(f"error: no bundle at {', '.join(map(str, missing or DEFAULT_BUNDLES))}. Make them with `make bundle` and "
              "`python -m crossl_edge.export`, or copy one here and pass --bundle PATH.", file=sys.stderr)
        return 2
    try:
        checked = [load_bundle(b) for b in bundles]  # every file's sha256, once, here rather than in a worker
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    side_python, side_why = None, None
    if args.no_tflite_runtime:
        side_why = "left out (--no-tflite-runtime)"
    elif installed("tflite-runtime") and not args.tflite_python:
        pass  # this environment has it (numpy<2 and no ExecuTorch, as on a board): measured beside the rest
    elif args.tflite_python:
        side_python, side_why = Path(args.tflite_python), tflite_env.works(Path(args.tflite_python))
        side_python = None if side_why else side_python
    else:
        side_python, side_why = tflite_env.ensure(log=lambda text: print(text, file=sys.stderr, flush=True))
    m = machine.describe()
    name = args.name or machine.machine_name(m) + ("-quick" if args.quick else "")
    out = Path(args.out) if args.out else RESULTS / name
    t0 = time.perf_counter()
    steps = len(args.threads) * repeats * (2 if side_python else 1) + 2
    step = 0

    def say(what: str) -> None:
        nonlocal step
        step += 1
        print(f"[{step}/{steps}] {what} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    latency = {}
    with tempfile.TemporaryDirectory(prefix="crossl-bench-") as tmp:
        for threads in args.threads:
            reps, side = [], []
            for i in range(repeats):
                say(f"latency, threads {threads}, repeat {i + 1}/{repeats}")
                reps.append(latency_worker(bundles, threads, runs, warmup, subset_runs if threads == "1" else 0,
                                           n_windows, args.run, Path(tmp) / f"lat-{threads}-{i}.json",
                                           backends="pytorch,executorch,litert" if side_python or args.no_tflite_runtime
                                           else None))
                if side_python:
                    say(f"latency, threads {threads}, repeat {i + 1}/{repeats}, tflite-runtime environment")
                    side.append(latency_worker(bundles, threads, runs, warmup, 0, n_windows, args.run,
                                               Path(tmp) / f"side-{threads}-{i}.json", side_python,
                                               "litert,tflite-runtime"))
            latency[threads] = combine(reps, side, side_why)
    names = latency["1"]["modalities"]
    skip = latency["1"].pop("skip")
    for setting in latency.values():
        setting.pop("skip", None)
    say("floor, sizes and the runtime process")
    int8 = next((b for b in checked if b.manifest.precision == "int8"), checked[0])
    has_tflite = "litert" in int8.manifest.backends
    light = next((be for be in ("litert", "tflite-runtime") if has_tflite and installed(be)), None)
    r = {
        "name": name, "mode": mode, "command": " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": m,
        "bundles": [_shown(b) for b in bundles], "latency": latency, "skip": skip, "modalities_key": "+".join(names),
        "skip_summary": skip_summary(skip, names), "floor": floor_section(checked, latency["1"], m),
        "sizes": sizes(checked),
        "footprint": footprint.runtime_footprint(int8.path, light) if light else
        {"skipped": "no torch-free backend (ai-edge-litert or tflite-runtime) is installed"},
    }
    say("bridge: parsing and frame-to-prediction latency")
    r["bridge"] = {"parse": bridge.parse_throughput(parse_n),
                   "latency": bridge.frame_to_prediction(int8, int8.manifest.window_s + bridge_s)}
    r["seconds"] = time.perf_counter() - t0
    accuracy_root = Path(args.accuracy)
    if any(accuracy_root.glob("raw/*/*.json")):
        where = accuracy_root.resolve()
        r["accuracy_source"] = str(where.relative_to(ROOT.parent) if where.is_relative_to(ROOT.parent) else where)

    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    made, note = draw(r, staging, accuracy_root)
    r["plots"] = made
    r["plots_skipped"] = note
    (staging / "results.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    (staging / "machine.json").write_text(json.dumps(m, indent=1) + "\n")
    report.write_csv(staging / "latency.csv", report.latency_rows(r))
    report.write_csv(staging / "skip_curve.csv", report.skip_rows(r))
    report.write_csv(staging / "sizes.csv", r["sizes"])
    (staging / "report.md").write_text(report.render(r, made, note))
    shutil.rmtree(out, ignore_errors=True)  # the new results replace the old whole, never half
    staging.rename(out)
    print((out / "report.md").read_text())
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
