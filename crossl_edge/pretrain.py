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
    model_cfg = ModelConfig(encoder=EncoderConfig(embed_dim=args.embed_dim))
    placement = place(args.device, amp=not args.no_amp)
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


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_main(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
