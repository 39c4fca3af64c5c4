"""`python -m crossl_edge.baseline`: a reference (window statistics + LR, or MiniRocket) on a run's own split.

A learned model has earned its place only when it beats the references a practitioner would pick instead (DESIGN.md).
This command fits one on exactly the windows a fine-tuned model of the run saw: the run's split and normalisation,
and the same stratified label sample (`label_budget` with the same fraction or count per class and seed), with its
regularisation chosen on the run's validation windows; it scores it on the run's held-out test windows with every
subset of sensors present, and merges the scores into <run>/metrics.json beside the models'. `evaluate` shows them
in the same table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from crossl_edge import cli

METHODS = ("stats_lr", "minirocket")
DEFAULT_FRACTION = 0.1  # finetune's default budget


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m crossl_edge.baseline",
        description="Fit a reference classifier on a run's own split and label budget and score it on the run's "
        "held-out test windows (every subset of sensors present); adds the scores to <run>/metrics.json, "
        "which `python -m crossl_edge.evaluate` shows beside the model's.",
    )
    cli.add_run_arg(p)
    p.add_argument("--method", default="stats_lr", choices=METHODS,
                   help="stats_lr: per-channel window statistics + logistic regression, C chosen on validation; "
                   "minirocket: MiniRocket features per modality + a balanced ridge, alpha chosen on validation "
                   "(needs the minirocket extra) (default: %(default)s)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--label-fraction", type=float, default=None,
                        help="fraction of the labelled training windows (default: the budget of the run's model.pt, "
                        f"else {DEFAULT_FRACTION:g}, as finetune)")
    budget.add_argument("--labels-per-class", type=int, default=None, help="labelled windows per class instead")
    p.add_argument("--label-seed", type=int, default=None,
                   help="seed of the label sample (default: model.pt's, else 0; the same seed draws the same windows "
                   "as finetune)")
    p.add_argument("--kernels", type=int, default=None,
                   help="minirocket: aeon's n_kernels per modality (default: 2000, rounded down by aeon to 1,932 "
                   "features)")
    p.add_argument("--seed", type=int, default=0, help="minirocket: seed of the random kernels (default: %(default)s)")
    p.add_argument("--data", default=None, help="data folder, if not where the run found it (run.json records that)")
    p.add_argument("--quiet", action="store_true", help="warnings only")
    return p


def run_budget(run: Path, fraction: float | None, per_class: int | None, seed: int | None) -> tuple[float | None, int | None, int, str]:
    """The label budget to use: as given, else that of the run's default model (model.json), else finetune's
    default. Returns (fraction, per_class, seed, where it came from)."""
    from crossl_edge.training.checkpoint import load_json

    if fraction is not None or per_class is not None:
        return fraction, per_class, seed or 0, "as given"
    made = run / "model.json"
    if made.is_file():
        d = load_json(made)
        if d.get("label_fraction") is not None or d.get("labels_per_class") is not None:
            return (d.get("label_fraction"), d.get("labels_per_class"),
                    seed if seed is not None else int(d.get("label_seed") or 0), "the budget of the run's model.pt")
    return DEFAULT_FRACTION, None, seed or 0, "finetune's default"


def budget_tag(fraction: float | None, per_class: int | None, seed: int) -> str:
    """'0.1', '5pc', with '_seed<s>' for another label sample: the same words as finetune's model tags."""
    return (f"{fraction:g}" if fraction is not None else f"{per_class}pc") + (f"_seed{seed}" if seed else "")


def body(args: argparse.Namespace) -> int:
    from crossl_edge.evaluate import format_table
    from crossl_edge.training.runs import label_budget, prepare_for_run, read_run, record_metrics

    if args.kernels is not None and args.method != "minirocket":
        raise ValueError("--kernels is MiniRocket's; it does not apply to --method stats_lr")
    if args.kernels is not None and args.kernels < 1:
        raise ValueError(f"--kernels must be at least 1, got {args.kernels}")
    run = Path(args.run)
    info = read_run(run)
    fraction, per_class, seed, where = run_budget(run, args.label_fraction, args.labels_per_class, args.label_seed)
    prep = prepare_for_run(info, args.data)
    idx = label_budget(prep, fraction, per_class, seed)
    train, val, test = prep.ws.subset(idx), prep.ws.subset(prep.labelled(prep.val)), prep.ws.subset(prep.labelled(prep.test))
    t0 = time.perf_counter()
    if args.method == "stats_lr":
        from crossl_edge.baselines import fit_stats_baseline, stats_baseline_scores

        model, chosen, val_f1 = fit_stats_baseline(train, val)
        scores, choice = stats_baseline_scores(model, test), {"C": chosen}
    else:
        from crossl_edge.baselines import minirocket

        kernels = args.kernels or minirocket.DEFAULT_N_KERNELS
        try:
            model, chosen, val_f1 = minirocket.fit_minirocket_baseline(train, val, n_kernels=kernels, seed=args.seed)
        except ImportError as e:  # aeon missing: the message says which extra to install
            raise ValueError(str(e)) from e
        scores, choice = minirocket.minirocket_baseline_scores(model, test), {"alpha": chosen, "kernels": kernels,
                                                                             "seed": args.seed}
    seconds = time.perf_counter() - t0
    key = f"baseline_{args.method}_{budget_tag(fraction, per_class, seed)}"
    record_metrics(run, key, scores, len(test.y), reference=args.method, label_fraction=fraction,
                   labels_per_class=per_class, label_seed=seed, labelled_windows=int(len(idx)), val_macro_f1=val_f1,
                   seconds=round(seconds, 2), **choice)
    chosen_text = ", ".join(f"{k} {v:g}" for k, v in choice.items() if k in ("C", "alpha"))
    print(f"{args.method} on {len(idx)} labelled windows ({where}: "
          + (f"{fraction:g} of the labelled training windows" if fraction is not None else f"{per_class} per class")
          + f", label seed {seed}), {chosen_text} chosen on {len(val.y)} validation windows (macro-F1 {val_f1:.3f}), "
          f"{seconds:.1f} s; on {len(test.y)} held-out test windows ({info.choice.dataset}):")
    print(format_table({key: scores}, [s.name for s in info.specs]))
    print(f"added {key} to {run}/metrics.json; python -m crossl_edge.evaluate --run {run} shows it beside the model")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_main(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
