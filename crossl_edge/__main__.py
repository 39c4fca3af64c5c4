"""`crossl-edge <verb> ...` (or `python -m crossl_edge <verb>`): one command over the `python -m crossl_edge.<verb>` tools."""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

VERBS = {
    "demo": "pretrain, fine-tune and evaluate end to end (the main job)",
    "pretrain": "CroSSL pretraining of encoders and aggregator",
    "finetune": "train a classifier from few labels (probe, fine-tune, or from scratch)",
    "evaluate": "test macro-F1 with every subset of sensors present",
    "baseline": "a reference (statistics + LR, or MiniRocket) on a run's own split and label budget",
    "export": "int8/fp32 edge bundle for ExecuTorch and LiteRT, verified against PyTorch",
    "personalize": "fit a new head on a few labelled windows of one user, on the device (no torch)",
    "run": "stream a replay, live sensors (--device) or simulated ones (--simulate) through the torch-free runtime",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in VERBS:
        out = sys.stdout if not argv or argv[0] in ("-h", "--help") else sys.stderr
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown command {argv[0]!r}", file=out)
        print("usage: crossl-edge <command> [options]   (crossl-edge <command> --help for its options)\n", file=out)
        for verb, text in VERBS.items():
            print(f"  {verb:<10} {text}", file=out)
        return 0 if out is sys.stdout else 2
    return importlib.import_module(f"crossl_edge.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
