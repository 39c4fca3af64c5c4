"""`python -m crossl_edge.finetune`: train a classifier from few labels (probe, fine-tune, or from scratch)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from crossl_edge import cli


def build_parser() -> argparse.ArgumentParser:
    from crossl_edge.training.supervised import MODES, FinetuneConfig

    d = FinetuneConfig()
    p = argparse.ArgumentParser(
        prog="python -m crossl_edge.finetune",
        description="Train a classifier in a run folder made by `python -m crossl_edge.pretrain`, on a stratified "
        "sample of the training subjects' labels; the weights with the best validation macro-F1 are kept and "
        "scored on the held-out test subjects. Writes model_<tag>.pt and model_<tag>.json.",
    )
    cli.add_run_arg(p)
    p.add_argument("--data", default=None, help="data folder, if not where the run found it (run.json records that)")
    p.add_argument(
        "--mode", default=d.mode, choices=MODES,
        help="probe: frozen pretrained backbone + a logistic regression on its standardised embeddings, C chosen on "
        "validation (--steps, --lr and --batch-size do not apply); finetune: all pretrained weights trained; "
        "scratch: same network from random weights (the supervised baseline); random_probe: the probe on the "
        "untrained network (random convolutional features, no pretraining needed) (default: %(default)s)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--label-fraction", type=float, default=None, help="fraction of labelled training windows (default 0.1)")
    budget.add_argument("--labels-per-class", type=int, default=None, help="labelled windows per class instead of a fraction")
    p.add_argument("--label-seed", type=int, default=0, help="seed of the label sample (default: %(default)s)")
    p.add_argument(
        "--modality-dropout", type=float, default=d.modality_dropout,
        help="probability of hiding each modality per training window, so the model copes with absent sensors (default: %(default)s)",
    )
    p.add_argument("--steps", type=int, default=None,
                   help="maximum optimiser steps (default: auto, about 100 passes over the labelled windows, "
                   "300 to 1000; the command prints the budget it chose and how long a step takes)")
    p.add_argument("--lr", type=float, default=d.lr, help="head learning rate (default: %(default)s)")
    p.add_argument(
        "--backbone-lr-scale", type=float, default=d.backbone_lr_scale,
        help="finetune: backbone learning rate = lr times this (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="default: %(default)s")
    p.add_argument(
        "--seed", type=int, default=d.seed,
        help="seed of the fresh weights (the head; every weight with --mode scratch or random_probe), batches and "
        "dropout (default: %(default)s)",
    )
    p.add_argument("--tag", default=None, help="name of the model files (default: <mode>_<budget>)")
    p.add_argument("--set-default", action="store_true", help="also make this the run's model.pt, the one export takes")
    cli.add_compute_args(p)
    return p


def body(args: argparse.Namespace) -> int:
    from crossl_edge.training.checkpoint import CheckpointError
    from crossl_edge.training.device import place
    from crossl_edge.training.runs import (
        label_budget, load_net, prepare_for_run, publish_default_model, read_run, record_metrics, save_model,
        train_and_score,
    )
    from crossl_edge.training.supervised import FRESH_MODES, PROBE_MODES, FinetuneConfig, auto_steps

    fraction = args.label_fraction
    if fraction is None and args.labels_per_class is None:
        fraction = 0.1
    run = Path(args.run)
    info = read_run(run)
    placement = place(args.device, amp=not args.no_amp)
    prep = prepare_for_run(info, args.data)
    if args.mode in FRESH_MODES:
        backbone = info.new_net()  # only its shape is used: these modes start from fresh weights seeded by --seed
    elif not (run / "backbone.pt").is_file():
        raise CheckpointError(f"{run} has no backbone.pt; pretrain first: python -m crossl_edge.pretrain --run {run}")
    else:
        backbone = load_net(run / "backbone.pt", info)
    idx = label_budget(prep, fraction, args.labels_per_class, args.label_seed)
    steps = args.steps if args.steps is not None else auto_steps(len(idx), args.batch_size)
    cfg = FinetuneConfig(
        mode=args.mode, max_steps=steps, batch_size=args.batch_size, lr=args.lr,
        backbone_lr_scale=args.backbone_lr_scale, modality_dropout=args.modality_dropout, seed=args.seed,
    )
    if args.mode not in PROBE_MODES:
        print(f"{args.mode}: {len(idx)} labelled windows, up to {steps} optimiser steps of {min(args.batch_size, len(idx))} "
              + ("(--steps)" if args.steps is not None else "(auto: about 100 passes over them; --steps to change)")
              + f", validation every {cfg.eval_every} steps", flush=True)
    net, result, scores = train_and_score(backbone, prep, idx, cfg, placement, progress=not args.quiet)
    budget = f"{fraction:g}" if fraction is not None else f"{args.labels_per_class}pc"
    tag = args.tag or f"{args.mode}_{budget}" + (f"_md{args.modality_dropout:g}" if args.modality_dropout else "")
    save_model(run, tag, net, cfg, len(idx), result, scores, label_fraction=fraction,
               labels_per_class=args.labels_per_class, label_seed=args.label_seed)
    n_test = len(prep.labelled(prep.test))
    record_metrics(run, f"model_{tag}.pt", scores, n_test)
    if args.set_default:
        publish_default_model(run, tag)
        record_metrics(run, "model.pt", scores, n_test)
    print(
        f"{args.mode} on {len(idx)} labelled windows: validation macro-F1 {result.best_val_f1:.3f} (step {result.best_step}), "
        f"test macro-F1 {next(iter(scores.values())):.3f} on {n_test} held-out windows\n"
        f"wrote {run}/model_{tag}.pt; next: python -m crossl_edge.evaluate --run {run} --model model_{tag}.pt"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_main(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
