"""`python -m crossl_edge.pretrain`: CroSSL pretraining of the encoders and aggregator on unlabelled windows."""

from __future__ import annotations

import argparse
from typing import Sequence

from crossl_edge import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m crossl_edge.pretrain",
        description="Pretrain per-modality encoders with CroSSL (latent masking + cross-modal aggregator + VICReg) "
        "on the training subjects' windows (labels unused). Writes run.json and backbone.pt into --run; "
        "an interrupted run resumes from its checkpoint when started again with the same options. "
        "Under torchrun it trains with DDP, one process per GPU.",
    )
    cli.add_run_arg(p)
    cli.add_data_args(p)
    from crossl_edge.masking import STRATEGIES
    from crossl_edge.models import EncoderConfig
    from crossl_edge.training.pretrain import PretrainConfig

    d, e = PretrainConfig(), EncoderConfig()
    g = p.add_argument_group("CroSSL")
    g.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training windows (default: %(default)s)")
    g.add_argument(
        "--batch-size", type=int, default=d.batch_size,
        help="windows per step and process; under DDP the global batch is this times the number of GPUs (default: %(default)s)",
    )
    g.add_argument("--lr", type=float, default=d.lr, help="AdamW peak learning rate, cosine-decayed (default: %(default)s)")
    g.add_argument("--masking", default=d.masking, choices=STRATEGIES, help="latent masking strategy (default: %(default)s)")
    g.add_argument(
        "--keep-prob", type=float, default=d.keep_prob,
        help="probability that a latent entry stays visible in each view; 1 - masking ratio (default: %(default)s)",
    )
    g.add_argument("--sim", type=float, default=d.sim, help="VICReg invariance coefficient (default: %(default)s)")
    g.add_argument("--std", type=float, default=d.std, help="VICReg variance coefficient (default: %(default)s)")
    g.add_argument("--cov", type=float, default=d.cov, help="VICReg covariance coefficient (default: %(default)s)")
    g.add_argument(
        "--expander", type=cli.ints, default=d.expander,
        help="expander MLP widths after the global embedding, comma-separated; VICReg acts on the last (default: 128,32)",
    )
    g.add_argument("--embed-dim", type=int, default=e.embed_dim, help="per-modality embedding size D (default: %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of weights, masks and batches (default: %(default)s)")
    r = p.add_argument_group("continued pretraining on your own sensors' recordings")
    r.add_argument("--recordings", default=None, metavar="DIR",
                   help="a folder of recordings made by the bridge (`python -m crossl_edge.run ... --record DIR`): "
                   "continue pretraining --from-run's backbone on them (unlabelled); the new --run keeps the source's data, "
                   "split and normalisation, so finetune, evaluate and export work on it as before")
    r.add_argument("--from-run", default=None, metavar="RUN", help="with --recordings: the run whose backbone to continue")
    r.add_argument("--mix", action="store_true",
                   help="with --recordings: also train on the source run's training windows (keeps the encoders near them)")
    cli.add_compute_args(p)
    return p


def body(args: argparse.Namespace) -> int:
    from crossl_edge.models import EncoderConfig, ModelConfig
    from crossl_edge.training.device import place
    from crossl_edge.training.pretrain import PretrainConfig
    from crossl_edge.training.runs import prepare, run_pretraining

    cfg = PretrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, masking=args.masking, keep_prob=args.keep_prob,
        sim=args.sim, std=args.std, cov=args.cov, expander=tuple(args.expander), seed=args.seed,
    )
    placement = place(args.device, amp=not args.no_amp)
    if args.recordings or args.from_run:
        return _continue(args, cfg, placement)
    model_cfg = ModelConfig(encoder=EncoderConfig(embed_dim=args.embed_dim))
    prep = prepare(cli.data_choice(args), args.data)
    _, result = run_pretraining(args.run, prep, model_cfg, cfg, placement, progress=not args.quiet)
    if placement.is_main:
        last = result.history[-1] if result.history else {}
        print(
            f"pretrained {args.epochs} epochs on {len(prep.train)} windows in {result.seconds:.0f} s"
            + (f" (resumed at epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else "")
            + (f"; final VICReg loss {last['loss']:.3f}" if last else "")
            + f"\nwrote {args.run}/backbone.pt; next: python -m crossl_edge.finetune --run {args.run}"
        )
    return 0


def _continue(args: argparse.Namespace, cfg, placement) -> int:
    from pathlib import Path

    from crossl_edge.training.runs import continue_on_recordings

    if not (args.recordings and args.from_run):
        raise ValueError("--recordings and --from-run go together: the recordings continue that run's backbone")
    _, result, n = continue_on_recordings(Path(args.from_run), Path(args.run), Path(args.recordings), cfg, placement,
                                          args.mix, progress=not args.quiet)
    if placement.is_main:
        last = result.history[-1] if result.history else {}
        print(f"continued {args.from_run}'s backbone for {args.epochs} epochs on {n} recording windows"
              + (" and its training windows" if args.mix else "") + f" in {result.seconds:.0f} s"
              + (f"; final VICReg loss {last['loss']:.3f}" if last else "")
              + f"\nwrote {args.run}/backbone.pt; next: python -m crossl_edge.finetune --run {args.run} --set-default, "
              f"then python -m crossl_edge.export --run {args.run} --int8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_main(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
