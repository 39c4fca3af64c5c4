"""`python -m crossl_edge.export [--int8]`: a trained run -> a verified edge bundle in export/<name>/."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import platform
import contextlib
import shutil
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from crossl_edge import cli
from crossl_edge.paths import EXPORT_ROOT

log = logging.getLogger("crossl_edge.export")

BACKEND_CHOICES = ("executorch", "litert")
TOOLS = ("crossl-edge", "torch", "torchao", "executorch", "litert-torch", "ai-edge-litert", "numpy")


class ExportError(RuntimeError):
    """A program failed verification: the bundle was not published."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m crossl_edge.export",
        description="Export a trained classifier as an edge bundle: one encoder program per modality and one "
        "aggregator+head program, for ExecuTorch (.pte, XNNPACK) and LiteRT (.tflite), with a manifest of "
        "modalities, classes, normalisation, quantisation and sha256 checksums. Every program is verified "
        "against the PyTorch fp32 model on the run's held-out test windows before the bundle is published.",
    )
    cli.add_run_arg(p)
    p.add_argument("--checkpoint", default=None, help="classifier weights (default: <run>/model.pt, what `make demo` publishes)")
    p.add_argument("--int8", action="store_true", help="post-training int8 quantisation (PT2E), calibrated on training windows; default fp32")
    p.add_argument("--out", default=None, help="bundle folder (default: export/<run name>-<int8|fp32>); replaced if it holds a bundle")
    p.add_argument("--backends", type=cli.names, default=list(BACKEND_CHOICES),
                   help="comma-separated subset of executorch,litert (default: both)")
    p.add_argument("--calibration-windows", type=int, default=512,
                   help="training windows that calibrate int8 ranges (default: %(default)s; 64 measured too few)")
    p.add_argument("--int8-tolerance", type=float, default=None,
                   help="largest relative embedding error (on calibration windows) at which an encoder's convs are int8; "
                   "above it only its projection is (default: 0.1; raise it for smaller, less exact bundles)")
    p.add_argument("--verify-windows", type=int, default=None,
                   help="held-out test windows to verify on (default: all labelled test windows of the run's split)")
    p.add_argument("--data", default=None, help="data folder, if not where the run found it (run.json records that)")
    p.add_argument("--sign-key", default=None, metavar="NAME.key",
                   help="sign the manifest with this Ed25519 signing key (python -m crossl_edge.runtime.signing keygen "
                   "NAME makes a pair; devices given NAME.pub then run only bundles it signed; needs the signing extra)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="warnings only")
    return p


def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for t in TOOLS:
        try:
            out[t] = importlib.metadata.version(t)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def run_hop_s(info, data_root) -> float:
    """The hop the run's windows were cut with: the runtime's default prediction interval."""
    from crossl_edge.data import DATASETS, find_dataset_root, read_byo_config

    hop = info.choice.hop_s if info.choice.hop_s is not None else DATASETS[info.choice.dataset].hop_s
    if hop is None and info.choice.dataset == "byo":
        hop = read_byo_config(find_dataset_root("byo", data_root, download=False)).hop_s
    return float(hop if hop is not None else info.specs[0].window_seconds)


def quiet_toolchain() -> None:
    """The exporters' deprecation chatter says nothing about the user's model; keep the output readable."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


@contextlib.contextmanager
def _interrupts_remembered():
    """The first Ctrl-C is remembered, and `_stop_if_interrupted` ends the export at its next step (after the
    current backend's lowering or check); a second Ctrl-C stops at once. Raising on the first one could land inside
    a native module's import during lowering: one such run aborted (SIGABRT) and left its `.partial/` behind,
    another swallowed the KeyboardInterrupt and published its bundle."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum, frame):
        if seen:
            raise KeyboardInterrupt
        seen.append(signum)
        print("interrupt: the export stops after its current step (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_if_interrupted(seen: list[int]) -> None:
    if seen:
        raise KeyboardInterrupt


def _reject(staging: Path, out: Path) -> Path:
    """Keep a bundle that failed its checks as <out>.rejected/ for inspection; never where a bundle is looked for."""
    rejected = out.with_name(out.name + ".rejected")
    shutil.rmtree(rejected, ignore_errors=True)
    staging.rename(rejected)
    return rejected


def body(args: argparse.Namespace) -> int:
    import numpy as np

    quiet_toolchain()
    from crossl_edge.export import executorch_backend, litert_backend
    from crossl_edge.export.programs import build_programs
    from crossl_edge.export.verify import INT8_AGREEMENT, INT8_F1_DROP, FP32_LOGIT_TOL, check_backend, torch_reference
    from crossl_edge.runtime.bundle import (
        AGGREGATE, BACKEND_FILES, FORMAT, MANIFEST, BackendEntry, BundleError, load_bundle, sha256_file, write_manifest,
    )
    from crossl_edge.runtime.signing import load_signing_key
    from crossl_edge.data import find_dataset_root
    from crossl_edge.data.normalize import SESSION_STD_FLOOR
    from crossl_edge.runtime.model import EdgeModel
    from crossl_edge.training.checkpoint import CheckpointError
    from crossl_edge.training.runs import load_net, load_raw, prepare_for_run, read_run, run_data_root

    unknown = set(args.backends) - set(BACKEND_CHOICES)
    if unknown or not args.backends:
        raise ValueError(f"--backends: unknown {sorted(unknown)}; choose from {', '.join(BACKEND_CHOICES)}")
    if args.int8_tolerance is None:
        from crossl_edge.export.programs import ENCODER_INT8_TOL

        args.int8_tolerance = ENCODER_INT8_TOL
    if args.calibration_windows < 1:
        raise ValueError("--calibration-windows must be at least 1")
    signing_key = load_signing_key(args.sign_key) if args.sign_key else None  # a bad key fails now, not after lowering
    run_dir = Path(args.run)
    info = read_run(run_dir)
    ckpt = Path(args.checkpoint) if args.checkpoint else run_dir / "model.pt"
    if not ckpt.is_file():
        raise CheckpointError(
            f"no classifier at {ckpt}; `make demo` trains one, or `python -m crossl_edge.finetune --run {run_dir} "
            "--set-default` makes model.pt in an existing run"
        )
    net = load_net(ckpt, info).eval()
    precision = "int8" if args.int8 else "fp32"
    out = Path(args.out) if args.out else EXPORT_ROOT / f"{run_dir.name}-{precision}"
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not a bundle; pick another --out")

    t0 = time.perf_counter()
    data_root = run_data_root(info, args.data)  # --data, else where the run found its data (run.json)
    raw = load_raw(info.choice, data_root)
    prep = prepare_for_run(info, raw=raw)
    rng = np.random.default_rng(args.seed)
    calib_idx = np.sort(rng.choice(prep.train, size=min(args.calibration_windows, len(prep.train)), replace=False))
    test = prep.labelled(prep.test)
    if args.verify_windows:
        test = np.sort(rng.choice(test, size=min(args.verify_windows, len(test)), replace=False))
    log.info("%s: %d calibration windows (training subjects), %d held-out test windows to verify on",
             info.choice.dataset, len(calib_idx), len(test))
    programs = build_programs(net, {s.name: prep.ws.x[s.name][calib_idx] for s in info.specs}, seed=args.seed)

    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with _interrupts_remembered() as interrupted:
        staging.mkdir(parents=True)
        try:
            builders = {"executorch": executorch_backend.build, "litert": litert_backend.build}
            entries, int8_choices = {}, {}
            for backend in args.backends:
                log.info("%s: %s programs, lowering%s ...", backend, precision, " after calibrating each" if args.int8 else "")
                tb = time.perf_counter()
                data, inputs, outputs, int8_choices[backend] = builders[backend](programs, args.int8, args.int8_tolerance)
                f = staging / BACKEND_FILES[backend]
                f.write_bytes(data)
                entries[backend] = BackendEntry(backend, f.name, sha256_file(f), len(data), inputs, outputs)
                log.info("%s %s: %d bytes in %.1f s", backend, precision, len(data), time.perf_counter() - tb)
                _stop_if_interrupted(interrupted)

            manifest = {
                "format": FORMAT,
                "name": out.name,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "source": {"run": str(run_dir), "checkpoint": str(ckpt), "checkpoint_sha256": sha256_file(ckpt),
                           "dataset": info.choice.dataset, "split": info.choice.to_dict(),
                           "test_subjects": sorted({str(v) for v in prep.ws.subject[prep.test]})},
                "modalities": [s.to_dict() for s in info.specs],
                "class_names": list(info.class_names),
                "normalization": info.norm.to_dict(),
                "session_normalization": {"std_floor_fraction": SESSION_STD_FLOOR} if info.choice.normalization == "session" else None,
                "window_s": info.specs[0].window_seconds,
                "hop_s": run_hop_s(info, data_root),
                "embed_dim": info.model_cfg.encoder.embed_dim,
                "global_dim": net.aggregator.feature_dim,
                "precision": precision,
                "quantization": None if not args.int8 else {
                    "method": "PT2E post-training static quantisation",
                    "weights": "int8, per-channel symmetric",
                    "activations": "int8, per-tensor affine (histogram observer)",
                    "calibration_windows": len(calib_idx),
                    "calibration_data": f"normalised training windows of split {info.choice.split} ({info.choice.protocol}); "
                                        "aggregator on their fp32 embeddings, half with random sensors absent",
                    "seed": args.seed,
                    "encoder_int8_tolerance": args.int8_tolerance,
                    "io": "per tensor under backends.<b>.programs.<p>.inputs/outputs: real = (q - zero_point) * scale",
                    "fp32_parts": "in each encoder, the window's moments and standardisation, the EMG envelope (a mean) and "
                                  "the BatchNorm of the statistics path, plus every conv or linear layer not in its "
                                  "int8_parts chosen plan; in the aggregator, its normalisation and mask blend",
                    "int8_parts": int8_choices,
                },
                "programs": {"encoders": {s.name: f"enc_{s.name}" for s in info.specs}, "aggregate": AGGREGATE},
                "backends": {b: e.to_dict() for b, e in entries.items()},
                "tools": tool_versions(),
            }
            write_manifest(staging, manifest, signing_key)

            ref_z, ref_logits = torch_reference(net, {s.name: prep.ws.x[s.name][test] for s in info.specs})
            session = info.choice.normalization == "session"
            # a session-normalised model is checked on the windows as its sessions standardise them (the runtime's
            # running statistics), handed to the programs as they are
            raw_test = {s.name: (prep.ws if session else raw).x[s.name][test] for s in info.specs}
            checks = []
            try:
                # the exporter's own check, whatever $CROSSL_EDGE_VERIFY_KEY says: its signature, if it signs, must verify
                bundle = load_bundle(staging, verify_keys=[signing_key.verify_key] if signing_key else [])
                for backend in args.backends:
                    model = EdgeModel(bundle, backend, threads=1)  # a program its runtime refuses to load fails here
                    for s in info.specs if session else ():
                        model.set_normalization(s.name, np.zeros(s.channels, np.float32), np.ones(s.channels, np.float32))
                    checks.append(check_backend(model, net, raw_test, raw.y[test], ref_z, ref_logits, args.int8, args.seed))
                    print(checks[-1].line())
                    _stop_if_interrupted(interrupted)
            except BundleError as e:
                raise ExportError(f"{e}; the bundle was NOT published (kept for inspection in {_reject(staging, out)})") from e
            manifest["verification"] = {
                "data": f"{len(test)} labelled test windows of split {info.choice.split}, all sensors present; aggregator "
                        "alone under random presence masks",
                "tolerance": {"int8": {"argmax_agreement_min": INT8_AGREEMENT, "macro_f1_drop_max": INT8_F1_DROP}}
                if args.int8 else {"fp32": {"max_logit_diff": FP32_LOGIT_TOL}},
                "results": {c.backend: c.to_dict() for c in checks},
            }
            write_manifest(staging, manifest, signing_key)
            _stop_if_interrupted(interrupted)
            failed = [c for c in checks if c.failures]
            if failed:
                raise ExportError(
                    "verification failed for " + ", ".join(f"{c.backend} ({'; '.join(c.failures)})" for c in failed)
                    + f"; the bundle was NOT published (kept for inspection in {_reject(staging, out)})"
                )
            if out.exists():
                old = out.with_name(out.name + ".old")
                shutil.rmtree(old, ignore_errors=True)
                out.rename(old)
                staging.rename(out)
                shutil.rmtree(old)
            else:
                staging.rename(out)
        except ExportError:  # verification or loading failed: kept as <out>.rejected, the message says so
            raise
        except BaseException:  # a lowering that crashed, a full disk, Ctrl-C: no half-written bundle stays behind
            shutil.rmtree(staging, ignore_errors=True)
            print(f"export failed: the half-written {staging} was removed; no bundle was published"
                  + (f" and {out} is as it was" if out.exists() else ""), file=sys.stderr, flush=True)
            raise
    sizes = ", ".join(f"{b} {e.bytes / 1024:.1f} KiB" for b, e in entries.items())
    signed = f"; signed by key {bytes(signing_key.verify_key).hex()[:16]}" if signing_key else ""
    print(f"bundle {out} ({precision}; {sizes}{signed}) written and verified in {time.perf_counter() - t0:.1f} s")
    held_out = manifest["source"]["test_subjects"]
    where = "" if info.choice.dataset != "byo" else f" --data {find_dataset_root('byo', data_root, download=False)}"
    print(f"run it: python -m crossl_edge.run --bundle {out} --source replay:{info.choice.dataset}:"
          f"{held_out[0] if held_out else '<subject>'}{where}   (a held-out subject of the run)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return cli.run_main(body, build_parser(), argv)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("export interrupted", file=sys.stderr)
        return 130
