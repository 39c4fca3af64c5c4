"""Pieces shared by the command-line entry points (argument groups, logging, errors to the user)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from crossl_edge.paths import DEFAULT_RUN

# Errors a user can fix; shown as one line, not a traceback. DataError, SpecError, CheckpointError and
# BundleError are ValueErrors. Nothing here imports torch: the runtime's commands use this module on the Pi.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run", "--run-dir", dest="run", default=str(DEFAULT_RUN),
        help="run folder (default: %(default)s, what `make demo` writes); under torchrun spell it --run-dir, "
        "since torchrun takes --run as an abbreviation of its own --run-path",
    )


def add_data_args(p: argparse.ArgumentParser) -> None:
    from crossl_edge.data import DATASETS

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="stress-predict", choices=sorted(DATASETS), help="data set (default: %(default)s)")
    g.add_argument(
        "--data",
        default=None,
        help="folder holding the data set (or its parent); default: $CROSSL_EDGE_DATA, then the cache, then download",
    )
    g.add_argument("--window", type=float, default=None, help="window length in seconds (default: the data set's)")
    g.add_argument("--hop", type=float, default=None, help="hop between windows in seconds (default: the data set's)")
    g.add_argument("--modalities", type=names, default=None, help="comma-separated subset of modalities (default: all)")
    g.add_argument(
        "--protocol",
        default="subjects",
        help="subjects (subject-wise), group:<name> (leave one group out, e.g. group:2020-07-09), "
        "or kfold:<k> (stratified, within session) (default: %(default)s)",
    )
    g.add_argument("--split", type=int, default=0, help="which split of the protocol, 0-based (default: %(default)s)")
    g.add_argument(
        "--n-splits", type=int, default=5, help="splits of the subject-wise protocol; each holds out 1/n of the subjects (default: %(default)s)"
    )
    g.add_argument("--split-seed", type=int, default=0, help="seed of the subject shuffle (default: %(default)s)")
    g.add_argument(
        "--normalization", default="global", choices=["global", "session"],
        help="global: standardise with the training windows' statistics; session: per-user adaptation without "
        "labels, each user's (and day's) own running statistics, as the runtime then learns them live from the "
        "wearer's stream (default: %(default)s)",
    )


def data_choice(args: argparse.Namespace):
    from crossl_edge.training.runs import DataChoice

    return DataChoice(
        dataset=args.dataset,
        window_s=args.window,
        hop_s=args.hop,
        modalities=args.modalities,
        protocol=args.protocol,
        split=args.split,
        n_splits=args.n_splits,
        split_seed=args.split_seed,
        normalization=args.normalization,
    )


def add_compute_args(p: argparse.ArgumentParser, training: bool = True) -> None:
    g = p.add_argument_group("compute")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: CUDA if present (%(default)s)")
    if training:
        g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA (it is never used on the CPU)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def setup(args: argparse.Namespace) -> None:
    # Our own progress at INFO; other libraries' (the exporters log every lowering pass) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("crossl_edge").setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def run_main(body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, set up, run; a user error becomes one clear line and exit code 2."""
    args = parser.parse_args(argv)
    setup(args)
    try:
        return body(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
