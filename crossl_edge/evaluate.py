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
        "Adds the scores to <run>/metrics.json and shows them beside those of the references fitted on the run "
        "(python -m crossl_edge.baseline).",
    )
    cli.add_run_arg(p)
    p.add_argument("--model", default="model.pt", help="model file inside the run folder (default: %(default)s)")
    p.add_argument("--data", default=None, help="data folder, if not where the run found it (run.json records that)")
    p.add_argument("--all-present-only", action="store_true", help="skip the modality-subset table")
    cli.add_compute_args(p, training=False)
    return p


def format_table(columns: dict[str, dict[str, float]], names: Sequence[str] = ()) -> str:
    """Macro-F1 per subset of modalities present (rows: largest first, in the order of `names`, the run's
    modalities) for each model or reference (columns); '-' where a column has no score for a subset."""
    from crossl_edge.spec import modality_subsets

    given = list(dict.fromkeys(k for scores in columns.values() for k in scores))
    ordered = ["+".join(s) for s in modality_subsets(tuple(names))] if names else []
    rows = [k for k in ordered if k in given] + [k for k in given if k not in ordered]
    width = max(len("modalities present"), *(len(k) for k in rows))
    widths = [max(len(name), 8) for name in columns]
    lines = [f"{'modalities present':<{width}}  " + "  ".join(f"{n:>{w}}" for n, w in zip(columns, widths)),
             f"{'-' * width}  " + "  ".join("-" * w for w in widths)]
    for k in rows:
        cells = [f"{scores[k]:{w}.3f}" if k in scores else f"{'-':>{w}}" for scores, w in zip(columns.values(), widths)]
        lines.append(f"{k:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def references(run: Path, test_windows: int) -> dict[str, dict[str, float]]:
    """The references (`python -m crossl_edge.baseline`) stored in <run>/metrics.json, scored on the same number of
    test windows (the same split), by metrics key."""
    from crossl_edge.training.checkpoint import load_json

    path = run / "metrics.json"
    metrics = load_json(path) if path.is_file() else {}
    return {k: v["macro_f1"] for k, v in sorted(metrics.items())
            if v.get("reference") and v.get("test_windows") == test_windows}


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
    refs = references(run, n_test)
    print(f"{path} on {n_test} held-out test windows ({info.choice.dataset})"
          + (", beside the references fitted on the run's split (python -m crossl_edge.baseline):" if refs else ":"))
    print(format_table({args.model: scores, **refs}, [s.name for s in info.specs]))
    if not refs:
        print(f"(python -m crossl_edge.baseline --run {run} fits window statistics + logistic regression on the same "
              "split and label budget; its scores then show here)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_main(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
