"""`python -m crossl_edge.demo` (what `make demo` runs): the main job, end to end on real data.

CroSSL-pretrain on the training subjects of Stress-Predict, then with 10% of their labels train a linear
probe and a fine-tuned classifier, beside the same network trained supervised from scratch (with and
without modality dropout), the probe on the untrained network (random features) and the window-statistics +
logistic-regression baseline; score all on held-out subjects with every subset of sensors present, and publish
the network with the best *validation* macro-F1 (ties: the lower validation loss) as <run>/model.pt for
`python -m crossl_edge.export` (the test scores never choose it).

Stress-Predict is the default because it is the multi-sensor, multi-rate, multi-subject set at hand
(4 wrist modalities at 4-64 Hz, 34 labelled people) and MIT-licensed, so the loader may download it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from crossl_edge import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m crossl_edge.demo",
        description="Pretrain with CroSSL, fine-tune with few labels, compare with supervised training, evaluate "
        "with sensors missing. Takes about 2 minutes on 2 CPU cores.",
    )
    cli.add_run_arg(p)
    cli.add_data_args(p)
    p.add_argument("--label-fraction", type=float, default=0.1, help="labels used downstream (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=15, help="CroSSL pretraining epochs (default: %(default)s)")
    p.add_argument("--steps", type=int, default=400, help="maximum steps of each downstream training (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    cli.add_compute_args(p)
    return p


def body(args: argparse.Namespace) -> int:
    from crossl_edge.models import ModelConfig
    from crossl_edge.training.device import place
    from crossl_edge.training.pretrain import PretrainConfig
    from crossl_edge.training.runs import (
        label_budget, prepare, publish_default_model, record_metrics, run_pretraining, save_model, stats_baseline,
        train_and_score,
    )
    from crossl_edge.training.supervised import FinetuneConfig, choose_by_validation

    t0 = time.perf_counter()
    run = Path(args.run)
    placement = place(args.device, amp=not args.no_amp)
    prep = prepare(cli.data_choice(args), args.data)
    print(
        f"{args.dataset}: {len(prep.ws)} windows of {prep.ws.specs[0].window_seconds:g} s, modalities "
        + ", ".join(f"{s.name} {s.channels}x{s.window} @ {s.sample_rate:g} Hz" for s in prep.ws.specs)
    )
    print(f"split {prep.split_info}" if args.protocol != "subjects" else
          f"split {args.split}: subjects {', '.join(prep.split_info['test'])} held out for test, "
          f"{', '.join(prep.split_info['val'])} for validation, {len(prep.split_info['train'])} for training")
    model_cfg = ModelConfig()
    backbone, pre = run_pretraining(
        run, prep, model_cfg, PretrainConfig(epochs=args.epochs, seed=args.seed), placement, progress=not args.quiet
    )
    print(f"CroSSL pretraining: {args.epochs} epochs on {len(prep.train)} unlabelled windows, {pre.seconds:.0f} s")
    idx = label_budget(prep, args.label_fraction, None, args.seed)
    n_test = len(prep.labelled(prep.test))
    variants = [
        ("crossl_probe", "probe", 0.0),
        ("crossl_finetune", "finetune", 0.0),
        ("supervised", "scratch", 0.0),
        ("supervised_mdrop", "scratch", 0.25),
        ("random_probe", "random_probe", 0.0),
    ]
    results, fits = {}, {}
    for tag, mode, mdrop in variants:
        cfg = FinetuneConfig(mode=mode, max_steps=args.steps, modality_dropout=mdrop, seed=args.seed)
        net, fit, scores = train_and_score(backbone, prep, idx, cfg, placement, progress=not args.quiet)
        save_model(run, tag, net, cfg, len(idx), fit, scores, label_fraction=args.label_fraction, label_seed=args.seed)
        record_metrics(run, f"model_{tag}.pt", scores, n_test)
        results[tag], fits[tag] = scores, fit
        print(f"{tag}: validation macro-F1 {fit.best_val_f1:.3f}, test {next(iter(scores.values())):.3f} ({fit.seconds:.0f} s)")
    # The cheap baseline every deep result stands beside, on the same labelled windows.
    results["stats_lr"], lr_c, lr_val = stats_baseline(prep, idx)
    print(f"stats_lr: validation macro-F1 {lr_val:.3f} (C={lr_c:g}), test {next(iter(results['stats_lr'].values())):.3f}")
    record_metrics(run, "stats_lr (window statistics + logistic regression)", results["stats_lr"], n_test)
    chosen = choose_by_validation(fits)
    publish_default_model(run, chosen)
    record_metrics(run, "model.pt", results[chosen], n_test)
    print(f"model.pt = {chosen}: the best validation macro-F1 ({fits[chosen].best_val_f1:.3f}; ties: the lower "
          f"validation loss, {fits[chosen].val_loss:.3f}) of the networks")

    subsets = list(next(iter(results.values())))
    table = {s: "  ".join(f"{results[t][s]:.3f}".rjust(len(t)) for t in results) for s in subsets}
    width = max(len(s) for s in [*subsets, "modalities present"])
    print(f"\nTest macro-F1 on held-out subjects, {len(idx)} labelled training windows ({args.label_fraction:g} of them):")
    print(f"{'modalities present':<{width}}  " + "  ".join(results))
    for s in subsets:
        print(f"{s:<{width}}  {table[s]}")
    print(
        "\nThis is one subject split: on Stress-Predict, scores swing by about 0.05 between splits. The comparison over "
        "5 splits, with paired differences, is in benchmarks/results/accuracy/accuracy.md (python -m benchmarks.accuracy)."
    )
    print(f"wrote {run}/ (model.pt = {chosen}) in {time.perf_counter() - t0:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_main(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
