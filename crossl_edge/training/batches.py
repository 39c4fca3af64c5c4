"""Windows as tensors and their mini-batches (the data fit in memory: ~75 MB for all of Stress-Predict)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from crossl_edge.data.types import WindowSet


def window_tensors(ws: WindowSet, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(ws.x[name], dtype=np.float32)).to(device) for name in ws.names}


def batch_indices(
    n: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1, drop_last: bool = False
) -> Iterator[np.ndarray]:
    """Index batches over n items; under DDP each rank takes every world-th batch of one shared permutation.

    With world > 1 every rank gets the same number of full batches (a rank with one more batch than the
    others would wait forever in DDP's gradient all-reduce).
    """
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    if world > 1:
        stop = (n // (batch_size * world)) * batch_size * world
    else:
        stop = (n // batch_size) * batch_size if drop_last else n
    for k, start in enumerate(range(0, stop, batch_size)):
        if k % world == rank:
            yield order[start : start + batch_size]


def take(x: dict[str, torch.Tensor], idx: np.ndarray) -> dict[str, torch.Tensor]:
    i = torch.as_tensor(idx, device=next(iter(x.values())).device)
    return {k: v.index_select(0, i) for k, v in x.items()}


def fixed_size_batches(n: int, batch_size: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Endless batches of exactly min(batch_size, n) distinct indices, cut from a stream of permutations.

    Few-label training has no use for epochs: with 130 labels, batches of 64 per epoch end in one of 2 windows,
    so every third optimiser step and BatchNorm update would come from 2 windows. Cutting across permutation
    boundaries keeps every batch full and every window seen equally often."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    size = min(batch_size, n)
    rng = np.random.default_rng(seed)
    pending = np.empty(0, dtype=np.int64)
    while True:
        while len(pending) < size:
            fresh = rng.permutation(n)
            if len(pending):  # no window twice in one batch across the seam
                fresh = np.concatenate([fresh[~np.isin(fresh, pending)], fresh[np.isin(fresh, pending)]])
            pending = np.concatenate([pending, fresh])
        yield pending[:size]
        pending = pending[size:]
