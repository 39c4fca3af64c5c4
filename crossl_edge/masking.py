"""Latent masking (CroSSL, Deldari et al., WSDM 2024): random masks on the per-modality embeddings.

The mask is applied to the latent tensor [B, M, D], not to the raw signal, so the encoders run once
per batch and each of the two views differs only in what the aggregator is allowed to see.
"""

from __future__ import annotations

import torch
from torch import nn

STRATEGIES = ("spatial", "random", "feature")


def spatial_mask(b: int, m: int, d: int, keep_prob: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Keep or drop whole modality embeddings per sample: [B, M, D] of 0/1, constant along D.

    A sample whose every modality was dropped keeps one modality chosen uniformly, so no view is empty;
    the expected kept fraction is therefore keep_prob + (1 - keep_prob)^M / M.
    """
    keep = (torch.rand(b, m, generator=generator, device=device) < keep_prob).float()  # [B, M]
    empty = keep.sum(1) == 0  # [B]
    if empty.any():
        pick = torch.randint(0, m, (int(empty.sum()),), generator=generator, device=device)
        keep[empty.nonzero(as_tuple=True)[0], pick] = 1.0
    return keep.unsqueeze(-1).expand(b, m, d)


def random_mask(b: int, m: int, d: int, keep_prob: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Keep or drop single latent elements independently: [B, M, D] of 0/1."""
    return (torch.rand(b, m, d, generator=generator, device=device) < keep_prob).float()


def feature_mask(b: int, m: int, d: int, keep_prob: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Keep or drop the same feature dimensions across all modalities of a sample: [B, M, D], constant along M."""
    keep = (torch.rand(b, 1, d, generator=generator, device=device) < keep_prob).float()
    return keep.expand(b, m, d)


_MASKERS = {"spatial": spatial_mask, "random": random_mask, "feature": feature_mask}


class LatentMasking(nn.Module):
    """Draws a keep-mask for a latent tensor [B, M, D]; 1 = visible, 0 = masked."""

    def __init__(self, strategy: str = "spatial", keep_prob: float = 0.75) -> None:
        super().__init__()
        if strategy not in _MASKERS:
            raise ValueError(f"unknown masking strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
        self.strategy = strategy
        self.keep_prob = keep_prob

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, m, d = z.shape
        return _MASKERS[self.strategy](b, m, d, self.keep_prob, generator=generator, device=z.device)

    def extra_repr(self) -> str:
        return f"strategy={self.strategy!r}, keep_prob={self.keep_prob}"
