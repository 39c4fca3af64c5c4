"""VICReg loss (Bardes, Ponce, LeCun, ICLR 2022): variance-invariance-covariance regularisation.

Pulls the two views' embeddings together (invariance) while keeping every dimension's standard
deviation up (variance) and the dimensions decorrelated (covariance); no negative pairs needed.
"""

from __future__ import annotations

import torch
from torch import nn


def invariance_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the two views, [N, E] each."""
    return torch.nn.functional.mse_loss(a, b)


def variance_loss(x: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on each dimension's standard deviation over the batch: mean(relu(gamma - sqrt(var + eps)))."""
    std = torch.sqrt(x.var(dim=0) + eps)  # [E]
    return torch.relu(gamma - std).mean()


def covariance_loss(x: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances divided by the dimension E."""
    n, e = x.shape
    x = x - x.mean(dim=0)
    cov = (x.T @ x) / (n - 1)  # [E, E]
    off = cov - torch.diag(torch.diag(cov))
    return off.pow(2).sum() / e


class VICRegLoss(nn.Module):
    """sim * invariance + std * (variance(a) + variance(b)) / 2 + cov * (covariance(a) + covariance(b)).

    Defaults follow the official CroSSL code (sim 10, std 10, cov 100 on a 32-d output).
    """

    def __init__(self, sim: float = 10.0, std: float = 10.0, cov: float = 100.0, gamma: float = 1.0, eps: float = 1e-4) -> None:
        super().__init__()
        for name, value in (("sim", sim), ("std", std), ("cov", cov)):
            if value < 0:
                raise ValueError(f"VICReg coefficient {name} must be >= 0, got {value}")
        self.sim, self.std, self.cov, self.gamma, self.eps = sim, std, cov, gamma, eps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if a.shape != b.shape or a.dim() != 2:
            raise ValueError(f"VICReg needs two [N, E] tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        if a.shape[0] < 2:
            raise ValueError("VICReg needs a batch of at least 2 samples (variance and covariance are over the batch)")
        a, b = a.float(), b.float()  # the statistics are unstable in half precision
        inv = invariance_loss(a, b)
        var = (variance_loss(a, self.gamma, self.eps) + variance_loss(b, self.gamma, self.eps)) / 2
        cov = covariance_loss(a) + covariance_loss(b)
        total = self.sim * inv + self.std * var + self.cov * cov
        return total, {"invariance": inv.item(), "variance": var.item(), "covariance": cov.item()}
