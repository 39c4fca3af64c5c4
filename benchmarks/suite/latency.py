"""Per-window latency worker: one thread setting, one repeat, in a process of its own (so torch's and
ExecuTorch's process-wide thread pools start fresh). Run by `python -m benchmarks`; by hand:

    python -m benchmarks.suite.latency --bundle export/demo-int8 --bundle export/demo-fp32 --threads 1 --out t.json

Batch 1, real held-out windows of the bundle's data set (random ones in its training statistics when the
data set is not on this machine, and the result says so), cycled. Three things are timed per configuration:
- the model (`EdgeModel.predict` on one window: normalisation, int8 quantisation of inputs, the programs,
  dequantisation, softmax); the PyTorch row is the network's forward on already-normalised tensors;
- the programs alone: the backend's calls on inputs already prepared;
- end to end, as the device runs: one hop of samples of every sensor pushed into a StreamingClassifier and the
  prediction it then makes polled (ring buffers, windows, the model).
Each is timed in two modes (benchmarks/suite/timing.py): streaming, window by window with every configuration
and measure in a new random order each window (the headline), and warm, in blocks of calls in a row.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.suite.timing import run_interleaved, run_streaming
from crossl_edge.data.types import DataError
from crossl_edge.runtime import BackendUnavailable, EdgeModel, load_bundle
from crossl_edge.runtime.bundle import AGGREGATE, encoder_program, norm_arrays
from crossl_edge.runtime.stream import StreamingClassifier

BACKEND_LABELS = {"executorch": "ExecuTorch", "litert": "LiteRT", "tflite-runtime": "tflite-runtime"}
PYTORCH = "PyTorch eager fp32"
EXPORT_HINT = {"int8": "python -m crossl_edge.export --int8", "fp32": "python -m crossl_edge.export"}


def config_labels() -> list[tuple[str, str, str]]:
    """(label, backend, precision) of every row the table claims, PyTorch first."""
    return [(PYTORCH, "pytorch", "fp32")] + [(f"{BACKEND_LABELS[b]} {p}", b, p)
                                             for p in ("int8", "fp32") for b in BACKEND_LABELS]


def windows_for(manifest, n: int, seed: int = 0) -> tuple[list[dict[str, np.ndarray]], str]:
    """n windows as dicts of raw [C, T] arrays, and what they are."""
    from crossl_edge.runtime.replay import held_out_windows

    try:
        x, _ = held_out_windows(manifest, n)
        what = f"{len(next(iter(x.values())))} real held-out windows of {manifest.raw['source']['dataset']}"
    except (DataError, OSError, KeyError) as e:
        rng = np.random.default_rng(seed)
        x = {}
        for s in manifest.specs:
            mean, std = norm_arrays(manifest, s.name)
            x[s.name] = (mean + std * rng.standard_normal((n, s.channels, s.window))).astype(np.float32)
        what = f"{n} random windows in the bundle's training statistics (no real data here: {e})"
    count = len(next(iter(x.values())))
    return [{k: np.ascontiguousarray(v[i]) for k, v in x.items()} for i in range(count)], what


def cycle(fn, items: list):
    state = [0]

    def call():
        state[0] = (state[0] + 1) % len(items)
        return fn(items[state[0]])
    return call


def program_calls(m: EdgeModel, w: dict[str, np.ndarray]) -> list[tuple[str, list[np.ndarray]]]:
    """The backend calls of one window with their inputs already normalised and quantised. Reaches into the
    model's input feeds on purpose: this times the programs without the Python around them."""
    calls = [(encoder_program(k), [m._enc_in[k](w[k]).copy()]) for k in w]  # noqa: SLF001
    m.predict(w)  # leaves the aggregator's input buffers as this window sets them
    calls.append((AGGREGATE, [b.copy() for b in m.runner.inputs(AGGREGATE)]))
    return calls


def stream_steps(model: EdgeModel, windows: list[dict[str, np.ndarray]]):
    """A callable that does what a live loop does once per hop: push the next hop of samples of every sensor into a
    StreamingClassifier, then poll the one prediction that makes. The samples are the windows one after another
    (cycled), so every prediction is over real data and every encoder runs."""
    m = model.manifest
    hop = m.hop_s
    long = {s.name: np.concatenate([w[s.name].T for w in windows]) for s in m.specs}  # [N*T, C] per modality
    n_hops = max(1, int(round(len(windows) * m.window_s / hop)))

    def chunk(k: int) -> dict[str, np.ndarray]:
        out = {}
        for s in m.specs:
            a, b = int(np.floor(k * hop * s.sample_rate + 1e-6)), int(np.floor((k + 1) * hop * s.sample_rate + 1e-6))
            out[s.name] = np.ascontiguousarray(np.take(long[s.name], np.arange(a, b), axis=0, mode="wrap"))
        return out

    chunks = [chunk(k) for k in range(n_hops)]
    stream = StreamingClassifier(model)
    starts = {s.name: 0 for s in m.specs}
    rates = {s.name: float(s.sample_rate) for s in m.specs}
    state = {"k": 0}

    def step() -> None:
        k = state["k"]
        for name, x in chunks[k % n_hops].items():
            stream.push(name, x, starts[name] / rates[name])
            starts[name] += len(x)
        state["k"] = k + 1
        preds = stream.poll((k + 1) * hop)
        if len(preds) > 1 or (preds and preds[0].state != "ok"):
            raise RuntimeError(f"the benchmark's stream made {len(preds)} predictions in one hop: {preds}")

    while state["k"] * hop < m.window_s:  # the first window, untimed
        step()
    return step


def pytorch_model(manifest, run_arg: str | None):
    """(callable on a normalised window dict, None) or (None, why PyTorch cannot be timed here)."""
    try:
        have_torch = importlib.util.find_spec("torch") is not None
    except ImportError:  # a finder that refuses the name, as on a device without torch
        have_torch = False
    if not have_torch:
        return None, "torch is not installed (the torch-free device path)"
    run = Path(run_arg or manifest.raw.get("source", {}).get("run", ""))
    if not (run / "model.pt").is_file():
        return None, f"the bundle's run folder {run} (its model.pt) is not on this machine; pass --run"
    from crossl_edge.training.runs import load_net, read_run

    net = load_net(run / "model.pt", read_run(run)).eval()
    return (lambda x: net(x)), None


def measure(bundles: list[Path], threads: int | None, runs: int, warmup: int, subset_runs: int,
            n_windows: int, run_arg: str | None = None, backends: tuple[str, ...] | None = None) -> dict:
    """Every configuration of `bundles` (those of `backends` only, if given) in both modes; see the docstring."""
    from crossl_edge.spec import modality_subsets

    loaded = [load_bundle(b) for b in bundles]
    if not loaded:
        raise SystemExit("no bundle to benchmark")
    manifest = loaded[0].manifest
    names = manifest.modality_names
    windows, what = windows_for(manifest, n_windows)
    by_precision: dict[str, object] = {}
    for b in loaded:
        by_precision.setdefault(b.manifest.precision, b)
    models: dict[str, EdgeModel] = {}
    skipped: dict[str, str] = {}
    configs: dict[str, dict] = {}
    for label, backend, precision in config_labels():
        if backend == "pytorch" or (backends is not None and backend not in backends):
            continue
        b = by_precision.get(precision)
        if b is None:
            skipped[label] = f"no {precision} bundle given or found (make one: {EXPORT_HINT[precision]})"
            continue
        try:
            models[label] = EdgeModel(b, backend, threads=threads)
            configs[label] = {"backend": backend, "precision": precision, "bundle": str(b.path)}
        except BackendUnavailable as e:
            skipped[label] = str(e)

    model_calls = {}
    torch_threads = None
    net, why = pytorch_model(manifest, run_arg) if backends is None or "pytorch" in backends else (None, None)
    if net is None:
        if why:
            skipped[PYTORCH] = why
    else:
        import torch

        if threads:
            torch.set_num_threads(threads)
        torch_threads = torch.get_num_threads()
        norm = {k: norm_arrays(manifest, k) for k in names}
        tensors = [{k: torch.from_numpy(((w[k] - norm[k][0]) / norm[k][1])[None]) for k in names} for w in windows]
        no_grad = torch.no_grad()
        no_grad.__enter__()  # for the whole worker: it only ever runs inference
        model_calls[PYTORCH] = cycle(net, tensors)
        configs[PYTORCH] = {"backend": "pytorch", "precision": "fp32", "run": str(run_arg or manifest.raw["source"].get("run"))}
    program_calls_of = {}
    for label, m in models.items():
        model_calls[label] = cycle(m.predict, windows)
        prepared = [program_calls(m, w) for w in windows]
        program_calls_of[label] = cycle(lambda calls, m=m: [m.runner.run(p, x) for p, x in calls], prepared)
    ends = {label: stream_steps(m, windows) for label, m in models.items()}

    # streaming: every configuration and measure once per window, in a random order (the headline)
    streamed = {**{(label, "model"): fn for label, fn in model_calls.items()},
                **{(label, "programs"): fn for label, fn in program_calls_of.items()},
                **{(label, "end_to_end"): fn for label, fn in ends.items()}}
    timed = run_streaming(streamed, runs, warmup) if streamed else {}
    streaming = {kind: {label: v for (label, k), v in timed.items() if k == kind}
                 for kind in ("model", "programs", "end_to_end")}
    # warm: blocks of calls in a row
    warm = {"model": run_interleaved(model_calls, runs, warmup) if model_calls else {},
            "programs": run_interleaved(program_calls_of, runs, warmup) if program_calls_of else {}}

    skip = {}
    if subset_runs:
        subsets = modality_subsets(tuple(names))
        for label, m in models.items():
            per = {"+".join(s): cycle(lambda w, m=m, s=s: m.predict({k: w[k] for k in s}), windows) for s in subsets}
            skip[label] = run_streaming(per, subset_runs, max(5, warmup // 4))
    return {"threads": threads or "default", "torch_threads": torch_threads, "windows": what, "modalities": list(names),
            "rows": streaming["model"], "programs_only": streaming["programs"], "end_to_end": streaming["end_to_end"],
            "warm": {"rows": warm["model"], "programs_only": warm["programs"]},
            "skip": skip, "skipped": skipped, "configs": configs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.suite.latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", action="append", required=True, help="a bundle folder (repeat for int8 and fp32)")
    p.add_argument("--threads", default="1", help="1, another count, or 'default' (each runtime's own choice)")
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--subset-runs", type=int, default=0, help="timed runs per subset of sensors (0: no skip curve)")
    p.add_argument("--windows", type=int, default=64)
    p.add_argument("--run", default=None, help="run folder for the PyTorch row (default: the bundle's source run)")
    p.add_argument("--backends", default=None,
                   help="comma-separated subset of pytorch," + ",".join(BACKEND_LABELS) + " to time (default: all)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    threads = None if args.threads == "default" else int(args.threads)
    backends = tuple(b.strip() for b in args.backends.split(",")) if args.backends else None
    result = measure([Path(b) for b in args.bundle], threads, args.runs, args.warmup, args.subset_runs,
                     args.windows, args.run, backends)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
