"""Edge benchmark: size, accuracy, per-window latency and encoder skipping of exported bundles, and the
footprint of the torch-free runtime process, against PyTorch eager fp32 of the same model, in one run.

    make demo && python -m crossl_edge.export --int8 && python -m crossl_edge.export   # the bundles
    python -m benchmarks.edge                      # writes benchmarks/results/edge/edge.md and edge.json
    python -m benchmarks.edge --quick              # fewer repetitions

Latency: batch 1, one thread, real held-out windows, all sensors present unless said; each configuration
is timed in interleaved blocks (so a noisy moment hits every row alike), after a warm-up, and reported as
median / p90 / p99. The runtime rows include everything the device does per window (normalisation,
int8 quantisation of inputs, dequantisation, softmax); the PyTorch row gets already-normalised tensors.
Accuracy comes from each bundle's export-time verification: every labelled test window of the run's
split, fp32 PyTorch against the bundle's programs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from crossl_edge.paths import DEFAULT_RUN, EXPORT_ROOT

OUT = Path("benchmarks/results/edge")
RUNTIME_PROBE = """
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
from crossl_edge.runtime import EdgeModel
t_import = time.perf_counter() - t0
m = EdgeModel(sys.argv[1], "litert", threads=1)
t_load = time.perf_counter() - t0
w = {s.name: np.random.default_rng(0).normal(size=(s.channels, s.window)).astype(np.float32) for s in m.specs}
for _ in range(200):
    m.predict(w)
# VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so a child of the (torch-laden) benchmark would
# report its parent's peak
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")] if sys.platform == "linux" else []
peak_mb = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"import_s": t_import, "import_and_load_s": t_load, "max_rss_mb": peak_mb,
                  "torch_imported": "torch" in sys.modules}))
"""


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from crossl_edge.export.cli import tool_versions

    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), **tool_versions()}


def timed(fn, n: int, warmup: int, blocks: int = 10):
    """Yields a closure per block so several configurations can be interleaved; collect() gives the times."""
    times: list[float] = []

    def block():
        for _ in range(n // blocks):
            t = time.perf_counter_ns()
            fn()
            times.append((time.perf_counter_ns() - t) / 1e3)

    for _ in range(warmup):
        fn()
    return block, times


def stats(us: list[float]) -> dict:
    a = np.asarray(us)
    return {"median_us": float(np.median(a)), "p90_us": float(np.percentile(a, 90)), "p99_us": float(np.percentile(a, 99)),
            "runs": int(len(a))}


def run_interleaved(configs: dict, n: int, warmup: int, blocks: int = 10) -> dict:
    prepared = {k: timed(fn, n, warmup, blocks) for k, fn in configs.items()}
    for _ in range(blocks):
        for block, _ in prepared.values():
            block()
    return {k: stats(times) for k, (_, times) in prepared.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.edge", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=str(DEFAULT_RUN), help="run folder the bundles were exported from (default: %(default)s)")
    p.add_argument("--int8", default=None, help="int8 bundle (default: export/<run name>-int8)")
    p.add_argument("--fp32", default=None, help="fp32 bundle (default: export/<run name>-fp32)")
    p.add_argument("--out", default=str(OUT), help="results folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (about 20 s)")
    args = p.parse_args(argv)

    import torch

    from crossl_edge.runtime import EdgeModel
    from crossl_edge.runtime.bundle import load_bundle
    from crossl_edge.spec import modality_subsets
    from crossl_edge.training.runs import load_net, load_raw, prepare_for_run, read_run

    torch.set_num_threads(1)
    run = Path(args.run)
    bundles = {"int8": Path(args.int8 or EXPORT_ROOT / f"{run.name}-int8"), "fp32": Path(args.fp32 or EXPORT_ROOT / f"{run.name}-fp32")}
    for prec, b in bundles.items():
        if not (b / "manifest.json").is_file():
            print(f"error: no {prec} bundle at {b}; make it with `python -m crossl_edge.export --run {run}"
                  f"{' --int8' if prec == 'int8' else ''}`", file=sys.stderr)
            return 2
    n, warmup = (300, 30) if args.quick else (3000, 200)

    info = read_run(run)
    net = load_net(run / "model.pt", info).eval()
    raw = load_raw(info.choice)
    prep = prepare_for_run(info, raw=raw)
    idx = prep.labelled(prep.test)[:64]
    names = [s.name for s in info.specs]
    raw_w = [{k: np.ascontiguousarray(raw.x[k][i]) for k in names} for i in idx]
    x_t = [{k: torch.from_numpy(prep.ws.x[k][i : i + 1]) for k in names} for i in idx]

    models = {}
    for prec, b in bundles.items():
        for backend in load_bundle(b).manifest.backends:
            models[f"{backend} {prec}"] = EdgeModel(b, backend, threads=1)

    def cycler(fn):
        state = {"i": 0}

        def call():
            state["i"] = (state["i"] + 1) % len(idx)
            fn(state["i"])
        return call

    with torch.no_grad():
        configs = {"pytorch eager fp32": cycler(lambda i: net(x_t[i]))}
        for key, m in models.items():
            configs[key] = cycler(lambda i, m=m: m.predict(raw_w[i]))
        latency = run_interleaved(configs, n, warmup)

    # encoder skipping: encoder time for each subset of sensors, int8 bundles
    skip = {}
    for key, m in models.items():
        if "int8" not in key:
            continue
        subsets = {"+".join(s): s for s in modality_subsets(tuple(names))}
        cfg = {sub: cycler(lambda i, m=m, s=s: [m.encode(k, raw_w[i][k]) for k in s]) for sub, s in subsets.items()}
        skip[key] = run_interleaved(cfg, max(n // 5, 100), warmup // 2)

    sizes = {prec: {be: e.bytes for be, e in load_bundle(b).manifest.backends.items()} for prec, b in bundles.items()}
    accuracy = {prec: json.loads((b / "manifest.json").read_text())["verification"]["results"] for prec, b in bundles.items()}
    probe = subprocess.run([sys.executable, "-c", RUNTIME_PROBE, str(bundles["int8"])], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    if probe.returncode != 0:
        print(probe.stderr[-2000:], file=sys.stderr)
        return 1
    footprint = json.loads(probe.stdout.strip().splitlines()[-1])

    result = {"machine": machine(), "run": str(run), "bundles": {k: str(v) for k, v in bundles.items()},
              "repetitions": n, "latency": latency, "skip": skip, "sizes_bytes": sizes, "accuracy": accuracy,
              "runtime_process": footprint}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "edge.json").write_text(json.dumps(result, indent=1))
    (out / "edge.md").write_text(render(result, names))
    print((out / "edge.md").read_text())
    return 0


def render(r: dict, names: list[str]) -> str:
    m = r["machine"]
    lat = r["latency"]
    base = lat["pytorch eager fp32"]["median_us"]
    lines = [
        "# Edge benchmark", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']}, torch {m.get('torch')}, "
        f"executorch {m.get('executorch')}, ai-edge-litert {m.get('ai-edge-litert')}.",
        f"Run `{r['run']}`; bundles {', '.join(f'`{v}`' for v in r['bundles'].values())}. Command: `python -m benchmarks.edge`.", "",
        f"## Per-window latency, batch 1, one thread, all sensors present ({lat['pytorch eager fp32']['runs']} runs each, interleaved)", "",
        "| configuration | median us | p90 us | p99 us | speed-up vs PyTorch (median) |", "|---|---|---|---|---|",
    ]
    for k, v in lat.items():
        lines.append(f"| {k} | {v['median_us']:.1f} | {v['p90_us']:.1f} | {v['p99_us']:.1f} | {base / v['median_us']:.1f}x |")
    lines += ["", "## Size and accuracy (macro-F1 on the run's held-out test subjects, all sensors)", "",
              "| bundle | backend | bytes | KiB | macro-F1 PyTorch fp32 | macro-F1 bundle | argmax agreement | max logit diff |",
              "|---|---|---|---|---|---|---|---|"]
    for prec, by in r["sizes_bytes"].items():
        for be, size in by.items():
            a = r["accuracy"][prec].get(be, {})
            lines.append(f"| {prec} | {be} | {size} | {size / 1024:.1f} | {a.get('macro_f1_fp32', float('nan')):.4f} | "
                         f"{a.get('macro_f1_backend', float('nan')):.4f} | {a.get('argmax_agreement', float('nan')):.4f} | "
                         f"{a.get('max_logit_diff', float('nan')):.4f} |")
    for key, table in r["skip"].items():
        full = table["+".join(names)]["median_us"]
        lines += ["", f"## Encoder skipping, {key}: encoder time per window by sensors present", "",
                  "| sensors present | encoders | median us | of all-present |", "|---|---|---|---|"]
        for sub, v in table.items():
            lines.append(f"| {sub} | {sub.count('+') + 1} | {v['median_us']:.1f} | {v['median_us'] / full:.0%} |")
    f = r["runtime_process"]
    lines += ["", "## Runtime process (LiteRT int8, no torch)", "",
              f"import of crossl_edge.runtime {f['import_s']:.3f} s; import + bundle check and load "
              f"{f['import_and_load_s']:.3f} s; peak resident memory after 200 predictions {f['max_rss_mb']:.0f} MB; "
              f"torch imported: {f['torch_imported']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
