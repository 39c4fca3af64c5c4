"""`python -m crossl_edge.evaluate`: test macro-F1 of a trained model, with every subset of sensors present."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from crossl_edge import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m crossl_edge.evaluate",
        description="Score a model of a run folder on its held-out test windows: macro-F1 with all modalities and with "
        "every non-empty subset (absent modalities masked as the runtime masks disconnected sensors). "
        "Adds the scores to <run>/metrics.json.",
    )
    cli.add_run_arg(p)
    p.add_argument("--model", default="model.pt", help="model file inside the run folder (default: %(default)s)")
    p.add_argument("--data", default=None, help="data folder, if not where the run found it (run.json records that)")
    p.add_argument("--all-present-only", action="store_true", help="skip the modality-subset table")
    cli.add_compute_args(p, training=False)
    return p


def format_table(scores: dict[str, float]) -> str:
    width = max(len(k) for k in scores)
    lines = [f"{'modalities present':<{width}}  macro-F1", f"{'-' * width}  --------"]
    lines += [f"{k:<{width}}  {v:8.3f}" for k, v in scores.items()]
    return "\n".join(lines)


def body(args: argparse.Namespace) -> int:
    from crossl_edge.training.checkpoint import CheckpointError
    from crossl_edge.training.device import place
    from crossl_edge.training.runs import heldout_scores, load_net, prepare_for_run, read_run, record_metrics

    run = Path(args.run)
    info = read_run(run)
    path = run / args.model
    if not path.is_file():
        made = sorted(p.name for p in run.glob("model*.pt"))
        raise CheckpointError(
            f"no model {path}; models in this run: {', '.join(made) or 'none'} "
            f"(make one with python -m crossl_edge.finetune --run {run} --set-default)"
        )
    net = load_net(path, info).to(place(args.device, amp=False).device)
    prep = prepare_for_run(info, args.data)
    scores = heldout_scores(net, prep, all_subsets=not args.all_present_only)
    n_test = len(prep.labelled(prep.test))
    record_metrics(run, args.model, scores, n_test)
    print(f"{path} on {n_test} held-out test windows ({info.choice.dataset}):")
    print(format_table(scores))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_main(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
