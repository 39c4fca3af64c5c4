"""One benchmark command for a laptop and a board: `python -m benchmarks [--quick]` (or `make bench`).

Measures on the machine it runs on and writes benchmarks/results/<machine-name>/ (…-quick/ in quick mode):
report.md, results.json, machine.json, latency.csv, skip_curve.csv, sizes.csv and PNG plots:
- per-window latency, batch 1, at one thread and at each runtime's default: PyTorch eager fp32, ExecuTorch
  fp32 and int8, LiteRT fp32 and int8, tflite-runtime where installed; median/p90/p99 and run counts,
  repeated in fresh processes with the repeats' spread; every subset of sensors (the skip curve);
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

from benchmarks.suite import bridge, floor, footprint, machine, plots, report
from benchmarks.suite.latency import PYTORCH, config_labels
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
                   run: str | None, out: Path) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.suite.latency", "--threads", threads, "--runs", str(runs),
           "--warmup", str(warmup), "--subset-runs", str(subset_runs), "--windows", str(windows), "--out", str(out)]
    for b in bundles:
        cmd += ["--bundle", str(b)]
    if run:
        cmd += ["--run", run]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT.parent), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"the latency worker failed ({' '.join(cmd)}):\n{p.stderr[-3000:]}")
    return json.loads(out.read_text())


def combine(repeats: list[dict]) -> dict:
    """Repeats of one thread setting: per configuration the median over repeats of median/p90/p99, all runs
    counted, the repeats' spread, and the speed-up over PyTorch taken within each repeat (side by side)."""
    first = repeats[0]
    rows, spreads, speedup, programs = {}, {}, {}, {}
    for label in first["rows"]:
        per = [r["rows"][label] for r in repeats]
        rows[label] = {k: float(np.median([p[k] for p in per])) for k in ("median_us", "p90_us", "p99_us")}
        rows[label]["runs"] = int(sum(p["runs"] for p in per))
        spreads[label] = spread([p["median_us"] for p in per])
        if label in first["programs_only"]:
            programs[label] = {"median_us": float(np.median([r["programs_only"][label]["median_us"] for r in repeats]))}
        if PYTORCH in first["rows"] and label != PYTORCH:
            ratios = [r["rows"][PYTORCH]["median_us"] / r["rows"][label]["median_us"] for r in repeats]
            speedup[label] = {"median": float(np.median(ratios)), "min": float(min(ratios)), "max": float(max(ratios))}
    skip = {label: {sub: {k: float(np.median([r["skip"][label][sub][k] for r in repeats])) for k in ("median_us", "p90_us", "p99_us")}
                    | {"runs": int(sum(r["skip"][label][sub]["runs"] for r in repeats))} for sub in table}
            for label, table in first["skip"].items()}
    return {"claimed": [c[0] for c in config_labels()], "rows": rows, "spread": spreads, "speedup": speedup,
            "programs_only": programs, "skipped": first["skipped"], "configs": first["configs"],
            "repeats": len(repeats), "windows": first["windows"], "torch_threads": first["torch_threads"],
            "modalities": first["modalities"], "skip": skip}


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
    return {"source": str(bundle.file("litert")), "programs": macs, "macs_all": subsets[all_key]["macs"],
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
            out[label] = {"n": n, "one": share(1), "all_but_one": share(n - 1), "fixed_us": float(fixed),
                          "per_encoder_us": float(per_encoder), "r2": float(r2)}
    return out


def sizes(bundles: list[Bundle]) -> list[dict]:
    rows = []
    for bundle in bundles:
        results = bundle.manifest.raw.get("verification", {}).get("results", {})
        for backend, entry in bundle.manifest.backends.items():
            a = results.get(backend, {})
            rows.append({"bundle": str(bundle.path), "precision": bundle.manifest.precision, "backend": backend, "bytes": entry.bytes,
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
    p.add_argument("--accuracy", default=str(ACCURACY), help="accuracy benchmark results to plot (default: %(default)s)")
    args = p.parse_args(argv)

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
    m = machine.describe()
    name = args.name or machine.machine_name(m) + ("-quick" if args.quick else "")
    out = Path(args.out) if args.out else RESULTS / name
    t0 = time.perf_counter()
    steps = 2 * repeats + 2
    step = 0

    def say(what: str) -> None:
        nonlocal step
        step += 1
        print(f"[{step}/{steps}] {what} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    latency = {}
    with tempfile.TemporaryDirectory(prefix="crossl-bench-") as tmp:
        for threads in ("1", "default"):
            reps = []
            for i in range(repeats):
                say(f"latency, threads {threads}, repeat {i + 1}/{repeats}")
                reps.append(latency_worker(bundles, threads, runs, warmup, subset_runs if threads == "1" else 0,
                                           n_windows, args.run, Path(tmp) / f"lat-{threads}-{i}.json"))
            latency[threads] = combine(reps)
    names = latency["1"]["modalities"]
    skip = latency["1"].pop("skip")
    latency["default"].pop("skip")
    say("floor, sizes and the runtime process")
    int8 = next((b for b in checked if b.manifest.precision == "int8"), checked[0])
    has_tflite = "litert" in int8.manifest.backends
    light = next((be for be in ("litert", "tflite-runtime") if has_tflite and installed(be)), None)
    r = {
        "name": name, "mode": mode, "command": " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": m,
        "bundles": [str(b) for b in bundles], "latency": latency, "skip": skip, "modalities_key": "+".join(names),
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
