"""CroSSL pretraining: encoders run once per batch, two latent masks make two views, VICReg ties them."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from crossl_edge.masking import LatentMasking
from crossl_edge.models.crossl import CroSSLNet
from crossl_edge.training.batches import batch_indices, take
from crossl_edge.training.checkpoint import CheckpointError, load_state, save_state
from crossl_edge.training.device import Placement, all_reduce_mean, wrap_ddp
from crossl_edge.vicreg import VICRegLoss

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    epochs: int = 30
    batch_size: int = 128  # per process; VICReg's variance/covariance are batch statistics, so not too small
    lr: float = 2e-3  # AdamW peak; see lr_factor for the schedule
    weight_decay: float = 1e-4
    masking: str = "spatial"  # spatial | random | feature (see crossl_edge.masking)
    keep_prob: float = 0.75  # probability that a latent entry stays visible in a view
    sim: float = 10.0  # VICReg invariance coefficient
    std: float = 10.0  # VICReg variance coefficient
    cov: float = 100.0  # VICReg covariance coefficient
    expander: tuple[int, ...] = (128, 32)  # MLP after the global embedding; VICReg acts on its output
    seed: int = 0

    def __post_init__(self) -> None:
        from crossl_edge.masking import STRATEGIES

        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (VICReg uses batch statistics), got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.masking not in STRATEGIES:
            raise ValueError(f"unknown masking strategy {self.masking!r}; valid strategies: {', '.join(STRATEGIES)}")
        if not 0.0 < self.keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1], got {self.keep_prob}")
        if not self.expander or min(self.expander) < 1:
            raise ValueError(f"expander needs at least one positive width, got {self.expander}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        d = dict(d)
        if "expander" in d:
            d["expander"] = tuple(d["expander"])
        return cls(**d)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: a cosine from 1 to 0 over the whole run, times a linear warm-up over the
    first `warmup` steps (so the peak is a little under 1 when the run is only a few epochs long)."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def make_expander(in_dim: int, dims: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, out in enumerate(dims):
        layers.append(nn.Linear(in_dim, out))
        if i < len(dims) - 1:
            layers += [nn.BatchNorm1d(out), nn.ReLU()]
        in_dim = out
    return nn.Sequential(*layers)


class CroSSLObjective(nn.Module):
    """One forward pass of CroSSL: embeddings once, two masked aggregations, expander, VICReg."""

    def __init__(self, net: CroSSLNet, cfg: PretrainConfig) -> None:
        super().__init__()
        self.net = net
        self.masking = LatentMasking(cfg.masking, cfg.keep_prob)
        self.expander = make_expander(net.aggregator.out_dim, cfg.expander)
        self.loss = VICRegLoss(cfg.sim, cfg.std, cfg.cov)

    def forward(self, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        z = self.net.embed(x)  # [B, M, D], encoders in training mode (the official code's fault fixed)
        g1 = self.net.aggregator(z, self.masking(z))  # [B, G]
        g2 = self.net.aggregator(z, self.masking(z))
        return self.loss(self.expander(g1), self.expander(g2))


@dataclass
class PretrainResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def check_enough_windows(n: int, cfg: PretrainConfig, placement: Placement) -> None:
    """Refuse a pretraining with fewer windows than one batch per process (callers check before writing a run)."""
    if n < cfg.batch_size * placement.world:
        raise ValueError(
            f"only {n} windows to pretrain on, fewer than one batch of {cfg.batch_size} per process; lower --batch-size "
            "(but not far: VICReg's variance and covariance terms are batch statistics)"
        )


def pretrain(
    net: CroSSLNet,
    x: dict[str, torch.Tensor],
    cfg: PretrainConfig,
    placement: Placement,
    checkpoint: Path | None = None,
    progress: bool = True,
) -> PretrainResult:
    """Pretrain `net`'s encoders and aggregator in place on unlabelled windows `x` (tensors on the device).

    With `checkpoint`, state is saved after every epoch and a matching checkpoint found there is resumed.
    """
    torch.manual_seed(cfg.seed)
    n = len(next(iter(x.values())))
    check_enough_windows(n, cfg, placement)
    objective = CroSSLObjective(net, cfg).to(placement.device)
    model = wrap_ddp(objective, placement)
    optim = torch.optim.AdamW(objective.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, n // (cfg.batch_size * placement.world))
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, warmup, total))
    scaler = placement.grad_scaler()
    result = PretrainResult()
    start_epoch = 0
    # The checkpoint is only resumed by the same pretraining and network configuration.
    config_key = json.dumps({"pretrain": cfg.to_dict(), "model": net.cfg.to_dict()}, sort_keys=True)
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_state(checkpoint)
        if state.get("config") != config_key:
            raise CheckpointError(
                f"{checkpoint} was made with another pretraining or model configuration; "
                "start again with the same options, delete it, or use another --run folder"
            )
        try:
            objective.load_state_dict(state["objective"])
            optim.load_state_dict(state["optim"])
            sched.load_state_dict(state["sched"])
            scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{checkpoint} does not fit this network: {e}") from e
        # masks and dropout continue as if never interrupted
        torch.set_rng_state(state["rng"])
        if torch.cuda.is_available() and len(state.get("cuda_rng", [])) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start_epoch = int(state["epoch"])
        result.history = json.loads(state["history"])
        result.resumed_from_epoch = start_epoch
        log.info("resumed pretraining from %s at epoch %d", checkpoint, start_epoch)
    elif placement.world > 1:
        torch.manual_seed(cfg.seed + 1000 * placement.rank)  # same initial weights (set above), own masks per rank
    t0 = time.perf_counter()
    bar = tqdm(range(start_epoch, cfg.epochs), desc="CroSSL pretrain", disable=not (progress and placement.is_main))
    for epoch in bar:
        objective.train()
        sums: dict[str, float] = {}
        count = 0
        for idx in batch_indices(n, cfg.batch_size, True, cfg.seed * 100_003 + epoch, placement.rank, placement.world, drop_last=True):
            with placement.autocast():
                loss, parts = model(take(x, idx))
            optim.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
            sched.step()
            for k, v in {"loss": loss.item(), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
        row = {"epoch": epoch + 1, **{k: all_reduce_mean(v / max(count, 1), placement) for k, v in sums.items()}}
        row["lr"] = sched.get_last_lr()[0]
        result.history.append(row)
        bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3f}")
        if not math.isfinite(row.get("loss", 0.0)):
            raise FloatingPointError(f"pretraining diverged at epoch {epoch + 1}: {row}; lower --lr")
        if checkpoint is not None and placement.is_main:
            save_state(
                checkpoint,
                {
                    "objective": objective.state_dict(),
                    "optim": optim.state_dict(),
                    "sched": sched.state_dict(),
                    "epoch": epoch + 1,
                    "scaler": scaler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "config": config_key,
                    "history": json.dumps(result.history),
                },
            )
    result.seconds = time.perf_counter() - t0
    return result
