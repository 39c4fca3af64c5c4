"""Downstream training: linear probe, fine-tuning, or supervised from scratch, with early stopping on validation."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from crossl_edge.masking import spatial_mask
from crossl_edge.metrics import macro_f1
from crossl_edge.models.crossl import CroSSLNet
from crossl_edge.training.batches import batch_indices, fixed_size_batches, take
from crossl_edge.training.device import Placement

log = logging.getLogger(__name__)

MODES = ("scratch", "probe", "finetune", "random_probe")
#: Modes whose network starts from fresh weights seeded by FinetuneConfig.seed, not from the pretrained backbone.
FRESH_MODES = ("scratch", "random_probe")
#: Modes that fit only the head, by logistic regression on frozen embeddings.
PROBE_MODES = ("probe", "random_probe")
#: the automatic step budget (`auto_steps`): about this many passes over the labelled windows, within these bounds
AUTO_PASSES, AUTO_MIN_STEPS, AUTO_MAX_STEPS = 100, 300, 1000


def auto_steps(n_labelled: int, batch_size: int) -> int:
    """A step budget that follows the number of labelled windows: about AUTO_PASSES passes over them, at least
    AUTO_MIN_STEPS (six validation checks: early stopping's patience) and at most AUTO_MAX_STEPS, the budget of a
    large set. 1,000 steps over 8 labelled windows is over 5 minutes on two cores for nothing: the validation
    score stops moving long before (issue 16)."""
    passes = math.ceil(AUTO_PASSES * n_labelled / max(min(batch_size, n_labelled), 1))
    return int(min(max(passes, AUTO_MIN_STEPS), AUTO_MAX_STEPS))


@dataclass
class FinetuneConfig:
    # scratch: all weights from random; probe: frozen backbone, new head; finetune: all weights; random_probe: the
    # probe on frozen *untrained* encoders (random convolutional features + logistic regression, as ROCKET does;
    # an absent sensor reads as its training mean)
    mode: str = "finetune"
    max_steps: int = 1000  # optimiser steps; with few labels an "epoch" is a handful of steps, so budget in steps
    batch_size: int = 64
    lr: float = 1e-3
    backbone_lr_scale: float = 0.1  # finetune only: the pretrained backbone moves this much slower than the head
    weight_decay: float = 1e-4
    modality_dropout: float = 0.0  # per-sample probability of hiding each modality (at least one stays)
    eval_every: int = 50  # steps between validation checks
    patience: int = 6  # validation checks without improvement before stopping
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown fine-tuning mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")
        if self.mode in PROBE_MODES and self.modality_dropout > 0:
            raise ValueError("a linear probe trains on fixed embeddings of all modalities: modality dropout needs "
                             "--mode finetune or scratch")
        for name in ("max_steps", "batch_size", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (K_present * n_k): every class present weighs the same in the loss (the
    weights average 1 over the samples), so the loss cares about what macro-F1 measures."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


@torch.no_grad()
def predict_logits(
    net: CroSSLNet, x: dict[str, torch.Tensor], presence: torch.Tensor | None = None, batch_size: int = 512
) -> torch.Tensor:
    """Logits [N, K] in eval mode; `presence` [M] or [N, M] (default: all modalities present)."""
    net.eval()
    n = len(next(iter(x.values())))
    m = len(net.names)
    device = next(net.parameters()).device
    out = []
    for idx in batch_indices(n, batch_size, shuffle=False):
        p = None
        if presence is not None:
            p = presence[idx] if presence.dim() == 2 else presence.expand(len(idx), m)
            p = p.to(device)
        out.append(net(take(x, idx), p).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def global_embeddings(net: CroSSLNet, x: dict[str, torch.Tensor], batch_size: int = 512) -> torch.Tensor:
    net.eval()
    n = len(next(iter(x.values())))
    return torch.cat([net.global_embedding(take(x, idx)) for idx in batch_indices(n, batch_size, shuffle=False)])


@dataclass
class FitResult:
    best_val_f1: float
    best_step: int
    steps: int
    seconds: float
    probe_c: float | None = None  # the linear probe's chosen inverse L2 strength
    # mean cross-entropy of the kept weights on the validation windows: breaks ties of macro-F1 (a few labels per
    # class on an easy validation set often put several methods at 1.0)
    val_loss: float = math.inf


def _fit(
    params_groups: list[dict],
    loss_fn: Callable[[np.ndarray], torch.Tensor],
    val_fn: Callable[[], float],
    n_train: int,
    cfg: FinetuneConfig,
    modules: list[nn.Module],
    desc: str,
    progress: bool,
) -> FitResult:
    """Shared loop: AdamW on fixed-size mini-batches with a cosine schedule, validation every eval_every steps,
    keep the best weights."""
    optim = torch.optim.AdamW(params_groups, weight_decay=cfg.weight_decay)
    # Cosine decay to 0 over the step budget after a short warm-up: with a fixed lr the last steps before an
    # early stop are as noisy as the first, and the best-on-validation weights are one noisy sample of them.
    warmup = max(1, cfg.max_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.max_steps) / cfg.max_steps))
    )
    best = (-1.0, 0, [copy.deepcopy(m.state_dict()) for m in modules])
    step, stale = 0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.max_steps, desc=desc, disable=not progress, leave=False)
    batches = fixed_size_batches(n_train, cfg.batch_size, cfg.seed * 7919)
    timed = min(10, cfg.max_steps)  # steps timed before saying how long the whole budget may take
    while step < cfg.max_steps and stale < cfg.patience:
        idx = next(batches)
        for m in modules:
            m.train()
        loss = loss_fn(idx)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        step += 1
        bar.update(1)
        if step == timed and cfg.max_steps > timed:
            per_step = (time.perf_counter() - t0) / step
            log.info("%s: %.0f ms a step here, so the budget of %d steps takes up to %.0f s plus validation (early "
                     "stopping may end sooner; --steps sets the budget)", desc, per_step * 1e3, cfg.max_steps,
                     per_step * cfg.max_steps)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            f1 = val_fn()
            if f1 > best[0]:
                best = (f1, step, [copy.deepcopy(m.state_dict()) for m in modules])
                stale = 0
            else:
                stale += 1
            bar.set_postfix(val_f1=f"{f1:.3f}", best=f"{best[0]:.3f}")
    bar.close()
    for m, state in zip(modules, best[2]):
        m.load_state_dict(state)
    return FitResult(best_val_f1=best[0], best_step=best[1], steps=step, seconds=time.perf_counter() - t0)


#: Inverse L2 strengths tried for the linear probe, chosen by validation macro-F1 (as for the statistics baseline).
PROBE_CS = (0.001, 0.01, 0.1, 1.0, 10.0)


def _fit_probe(
    net: CroSSLNet, x_train: dict[str, torch.Tensor], y_train: np.ndarray, x_val: dict[str, torch.Tensor],
    y_val: np.ndarray, cfg: FinetuneConfig, progress: bool,
) -> FitResult:
    """The linear probe: the package's logistic regression on standardised global embeddings of the frozen
    backbone, solved to convergence for each C in PROBE_CS, C chosen on validation, folded into `net.head`.

    A probe trained by a few hundred Adam steps on unstandardised embeddings is under-fitted next to the
    statistics baseline, which gets exactly this treatment; the comparison is only fair this way."""
    from crossl_edge.baselines import LogisticRegression

    t0 = time.perf_counter()
    k = net.n_classes
    g_train = global_embeddings(net, x_train).double().cpu().numpy()
    g_val = global_embeddings(net, x_val).double().cpu().numpy()
    best: tuple[float, LogisticRegression | None] = (-1.0, None)
    for c in tqdm(PROBE_CS, desc="probe C", disable=not progress, leave=False):
        model = LogisticRegression(C=c).fit(g_train, y_train, k)
        f1 = macro_f1(y_val, model.predict(g_val), k)
        if f1 > best[0]:
            best = (f1, model)
    model = best[1]
    # fold the standardisation into the head: W (x - mean) / scale + b = (W / scale) x + (b - W mean / scale)
    w = model.coef_ / model.scale_
    b = model.intercept_ - w @ model.mean_
    weight = np.zeros((k, w.shape[1]))
    bias = np.full(k, float(b.min()) - 10.0)  # a class without training labels is never predicted
    weight[model.classes_], bias[model.classes_] = w, b
    with torch.no_grad():
        net.head.weight.copy_(torch.from_numpy(weight))
        net.head.bias.copy_(torch.from_numpy(bias))
    log.info("probe: C=%g, validation macro-F1 %.4f", model.C, best[0])
    return FitResult(best_val_f1=best[0], best_step=0, steps=0, seconds=time.perf_counter() - t0, probe_c=model.C)


def train_classifier(
    net: CroSSLNet,
    x_train: dict[str, torch.Tensor],
    y_train: np.ndarray,
    x_val: dict[str, torch.Tensor],
    y_val: np.ndarray,
    cfg: FinetuneConfig,
    placement: Placement,
    progress: bool = True,
) -> FitResult:
    """Train `net` (in place) on labelled windows; the weights with the best validation macro-F1 are kept.

    For "scratch", pass a freshly initialised net; for "probe" and "finetune", a pretrained one.
    The probe freezes encoders and aggregator (eval mode: BatchNorm statistics stay as pretrained)
    and fits only a new linear head on their global embeddings.
    """
    torch.manual_seed(cfg.seed)
    if len(y_train) == 0:
        raise ValueError("no labelled training windows")
    k = net.n_classes
    if y_train.min() < 0 or y_train.max() >= k:
        raise ValueError(f"training labels must be in 0..{k - 1}; got {y_train.min()}..{y_train.max()}")
    dev = placement.device
    net.to(dev)
    yt = torch.as_tensor(y_train, dtype=torch.long, device=dev)
    criterion = nn.CrossEntropyLoss(weight=class_weights(y_train, k).to(dev))
    m = len(net.names)

    if cfg.mode in PROBE_MODES:
        if cfg.mode == "random_probe":
            _absent_as_training_mean(net, x_train)
        fit = _fit_probe(net, x_train, y_train, x_val, y_val, cfg, progress)
        fit.val_loss = validation_loss(net, x_val, y_val)
        return fit

    if cfg.mode == "finetune":
        groups = [
            {"params": net.backbone_parameters(), "lr": cfg.lr * cfg.backbone_lr_scale},
            {"params": net.head.parameters(), "lr": cfg.lr},
        ]
    else:
        groups = [{"params": net.parameters(), "lr": cfg.lr}]
    gen = torch.Generator().manual_seed(cfg.seed)

    def loss_fn(idx):
        xb = take(x_train, idx)
        presence = None
        if cfg.modality_dropout > 0:
            presence = spatial_mask(len(idx), m, 1, 1.0 - cfg.modality_dropout, generator=gen)[..., 0].to(dev)
        with placement.autocast():
            logits = net(xb, presence)
        return criterion(logits.float(), yt[idx])

    def val_fn():
        return macro_f1(y_val, predict_logits(net, x_val).argmax(1).numpy(), k)

    fit = _fit(groups, loss_fn, val_fn, len(y_train), cfg, [net], cfg.mode, progress)
    fit.val_loss = validation_loss(net, x_val, y_val)
    return fit


@torch.no_grad()
def _absent_as_training_mean(net: CroSSLNet, x_train: dict[str, torch.Tensor], batch_size: int = 512) -> None:
    """Set the aggregator's mask tokens to the mean normalised embedding of each modality over `x_train`.

    An untrained mask token is zero, far from any real normalised embedding: a probe fitted with every sensor
    present then reads an absent one as an extreme input (LIS, EMG alone: macro-F1 0.07). The training mean is
    the linear analogue of what the statistics baseline does with an absent modality's columns (0 after
    standardisation), and it lifted EMG alone to 0.28 and EMG + gyroscope from 0.30 to 0.52 on LIS's held-out
    day (split 0, 5 labels per class). With every sensor present nothing changes. Pretrained mask tokens, which
    CroSSL's latent masking trains, are kept."""
    net.eval()
    n = len(next(iter(x_train.values())))
    total = torch.zeros_like(net.aggregator.mask_token)
    for idx in batch_indices(n, batch_size, shuffle=False):
        total += net.aggregator.norm(net.embed(take(x_train, idx))).sum(0)
    net.aggregator.mask_token.copy_(total / n)


def validation_loss(net: CroSSLNet, x_val: dict[str, torch.Tensor], y_val: np.ndarray) -> float:
    """Mean cross-entropy of `net` on labelled windows (all modalities present)."""
    logits = predict_logits(net, x_val).float()
    return float(nn.functional.cross_entropy(logits, torch.as_tensor(y_val, dtype=torch.long)))


def choose_by_validation(fits: dict[str, FitResult]) -> str:
    """The tag of the best fit on validation: highest macro-F1, ties broken by the lower validation loss."""
    return max(fits, key=lambda tag: (fits[tag].best_val_f1, -fits[tag].val_loss))
