"""Cross-platform agreement of a bundle's predictions: x86 reference windows and logits, rerun elsewhere.

    # on the machine the bundle was made on (x86), with the data set at hand:
    python deploy/pi/agreement.py reference --bundle export/demo-int8 --out /tmp/ref.npz [--n 64]
    # on the target (a Pi, or an arm64 root under qemu: deploy/pi/emulated_check.sh), no data set needed:
    python deploy/pi/agreement.py check --bundle export/demo-int8 --reference /tmp/ref.npz

`reference` takes real held-out windows of the bundle's test subjects (manifest source.test_subjects of
source.dataset; the data root is $CROSSL_EDGE_DATA or the usual places), raw and un-normalised as
EdgeModel.predict takes them, runs them through the torch-free runtime (litert, one thread) and saves
windows, logits, probabilities, labels and the manifest's sha256 into one .npz. Every fourth window has
one sensor left out (in turn), so the aggregator's presence masking is exercised too.

`check` reruns those windows on the runtime where it runs and compares: the predicted class must agree on
every window, and the largest |logit difference| must stay within TOL_QUANTA steps of the int8 logits
output's quantisation step (see TOL_QUANTA). Exit status 0 on agreement, 1 on disagreement, 2 on a
usage/bundle error. Timings are deliberately not measured: under emulation they mean nothing.

numpy, crossl_edge.runtime and (for `reference` only) crossl_edge.data: no torch, on either side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

# An int8 bundle's logits leave the aggregator as int8 and are dequantised: real = (q - zero_point) * scale,
# so two platforms can only differ in whole steps of `scale`. XNNPACK picks its kernels per ISA (x86 AVX2/
# AVX-512 vs ARM NEON, with or without dotprod), and they requantise int8 accumulators in fp32 or in
# fixed point depending on the kernel; the fp32 parts (each encoder's first convolution) may fuse
# multiply-adds on one ISA and not on the other. An intermediate value sitting on a rounding boundary can
# therefore land one step apart and move a logit by a step or two downstream. We allow TOL_QUANTA steps;
# more than that means a real numerical difference (a wrong kernel, a wrong wheel, a different bundle),
# not rounding. For a bundle whose logits are not quantised, FP32_TOL (absolute) is used.
TOL_QUANTA = 3
FP32_TOL = 1e-3


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _litert_version() -> str:
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - only informational
        return "unknown"


def _tolerance(model) -> tuple[float, str]:
    from crossl_edge.runtime.bundle import AGGREGATE

    if model.head is not None:
        return FP32_TOL + TOL_QUANTA * _logit_scale(model, AGGREGATE), "personalised head on dequantised output"
    scale = _logit_scale(model, AGGREGATE)
    if scale:
        return TOL_QUANTA * scale, f"{TOL_QUANTA} x int8 logit step {scale:.6g}"
    return FP32_TOL, "fp32 logits"


def _logit_scale(model, program: str) -> float:
    t = model.manifest.backends["litert"].outputs[program]["logits"]
    return float(t.scale) if t.quantized else 0.0


def _open(bundle: str):
    from crossl_edge.runtime import EdgeModel

    return EdgeModel(bundle, "litert", threads=1)


def _predict_all(model, xs: dict[str, np.ndarray], present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names = list(model.names)
    logits, probs = [], []
    for i in range(present.shape[0]):
        out = model.predict({k: np.ascontiguousarray(xs[k][i]) for j, k in enumerate(names) if present[i, j]})
        logits.append(np.array(out.logits, dtype=np.float32))
        probs.append(np.array(out.probs, dtype=np.float32))
    return np.stack(logits), np.stack(probs)


def reference(args: argparse.Namespace) -> int:
    from crossl_edge.data import load_windows

    bundle = Path(args.bundle)
    model = _open(str(bundle))
    m = model.manifest
    src = m.raw.get("source", {})
    dataset, subjects = src.get("dataset"), src.get("test_subjects")
    if not dataset or not subjects:
        print(f"error: {bundle}/manifest.json names no source.dataset / source.test_subjects", file=sys.stderr)
        return 2
    names = list(model.names)
    ws = load_windows(dataset, args.data_root, window_s=m.window_s, hop_s=m.hop_s, subjects=subjects, modalities=names)
    idx = np.flatnonzero(ws.y >= 0)
    if len(idx) == 0:
        print(f"error: no labelled windows of {subjects} in {dataset}", file=sys.stderr)
        return 2
    # evenly over all test subjects' labelled windows (they come subject by subject, in time)
    pick = idx[np.unique(np.linspace(0, len(idx) - 1, min(args.n, len(idx))).round().astype(np.int64))]
    xs = {k: ws.x[k][pick].astype(np.float32) for k in names}
    present = np.ones((len(pick), len(names)), dtype=bool)
    for i in range(3, len(pick), 4):  # every fourth window: one sensor absent, in turn
        present[i, (i // 4) % len(names)] = False
    logits, probs = _predict_all(model, xs, present)
    y = ws.y[pick]
    np.savez_compressed(
        args.out,
        **{f"x_{k}": v for k, v in xs.items()},
        names=np.array(names), present=present, logits=logits, probs=probs, labels=y,
        subjects=ws.subject[pick].astype(str), t_start=ws.t_start[pick], class_names=np.array(m.class_names),
        manifest_sha256=np.array(_sha256(bundle / "manifest.json")),
        reference_platform=np.array(json.dumps(_platform())),
    )
    acc = float((logits.argmax(1) == y).mean())
    print(f"reference: {len(pick)} windows of {dataset} subjects {','.join(sorted(set(ws.subject[pick].astype(str))))} "
          f"({int((~present).any(1).sum())} with one sensor absent); accuracy vs labels {acc:.3f}; "
          f"{_platform()['machine']} python {_platform()['python']} ai-edge-litert {_platform()['ai_edge_litert']}; "
          f"wrote {args.out}")
    return 0


def _platform() -> dict:
    return {"machine": platform.machine(), "python": platform.python_version(), "ai_edge_litert": _litert_version(),
            "numpy": np.__version__, "system": platform.platform()}


def check(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    ref = np.load(args.reference, allow_pickle=False)
    want_sha = str(ref["manifest_sha256"])
    have_sha = _sha256(bundle / "manifest.json")
    if want_sha != have_sha:
        print(f"error: {bundle}/manifest.json sha256 {have_sha[:12]} is not the reference's {want_sha[:12]}: "
              "another bundle", file=sys.stderr)
        return 2
    model = _open(str(bundle))  # checks every file's sha256 against the manifest
    names = [str(n) for n in ref["names"]]
    if names != list(model.names):
        print(f"error: reference modalities {names} != bundle's {list(model.names)}", file=sys.stderr)
        return 2
    xs = {k: ref[f"x_{k}"] for k in names}
    present = ref["present"]
    logits, probs = _predict_all(model, xs, present)
    ref_logits, ref_probs = ref["logits"], ref["probs"]
    n = len(logits)
    same = logits.argmax(1) == ref_logits.argmax(1)
    diff = np.abs(logits.astype(np.float64) - ref_logits)
    max_diff = float(diff.max())
    max_pdiff = float(np.abs(probs.astype(np.float64) - ref_probs).max())
    tol, why = _tolerance(model)
    scale = _logit_scale(model, "aggregate")
    srt = np.sort(ref_logits, axis=1)
    margin = float((srt[:, -1] - srt[:, -2]).min()) if ref_logits.shape[1] > 1 else float("inf")
    here, there = _platform(), json.loads(str(ref["reference_platform"]))
    torch_imported = "torch" in sys.modules
    ok = bool(same.all()) and max_diff <= tol and not torch_imported
    lines = [
        f"platform.machine()     {here['machine']}  ({here['system']})",
        f"python                 {here['python']}",
        f"ai-edge-litert         {here['ai_edge_litert']}",
        f"numpy                  {here['numpy']}",
        f"torch imported         {torch_imported}",
        f"reference from         {there['machine']}, python {there['python']}, ai-edge-litert {there['ai_edge_litert']}, "
        f"numpy {there['numpy']}",
        f"bundle                 {bundle} (manifest sha256 {have_sha[:12]})",
        f"windows                {n} ({int((~present).any(1).sum())} with one sensor absent)",
        f"argmax agreement       {int(same.sum())}/{n} ({100.0 * same.mean():.1f}%)",
        f"max |logit diff|       {max_diff:.6g}" + (f" = {max_diff / scale:.2f} int8 steps" if scale else "")
        + f"  (tolerance {tol:.6g}: {why}); windows differing: {int((diff.max(1) > 0).sum())}",
        f"max |prob diff|        {max_pdiff:.6g}",
        f"smallest ref margin    {margin:.6g} (top-1 minus top-2 logit)",
        "RESULT                 " + ("AGREE" if ok else "DISAGREE"),
    ]
    print("\n".join(lines))
    if not ok:
        bad = np.flatnonzero(~same | (diff.max(1) > tol))[:10]
        for i in bad:
            print(f"  window {i}: ref {np.round(ref_logits[i], 4)} here {np.round(logits[i], 4)}", file=sys.stderr)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python deploy/pi/agreement.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reference", help="x86: real held-out windows and their predictions into an .npz")
    r.add_argument("--bundle", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--n", type=int, default=64, help="windows (default: %(default)s)")
    r.add_argument("--data-root", default=None, help="data sets root (default: $CROSSL_EDGE_DATA or the usual places)")
    c = sub.add_parser("check", help="rerun the reference's windows here and compare")
    c.add_argument("--bundle", required=True)
    c.add_argument("--reference", required=True)
    args = p.parse_args(argv)
    from crossl_edge.runtime import BundleError

    try:
        return reference(args) if args.cmd == "reference" else check(args)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
