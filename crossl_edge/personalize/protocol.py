"""How personalisation is measured on a labelled recording: the first k windows of each class adapt the head,
later windows test it (numpy; used by benchmarks/personalize.py and by `personalize --evaluate`).

Adaptation windows of a class do not overlap each other (windows cut with a hop shorter than the window
would otherwise repeat the same seconds), and no test window overlaps an adaptation window. Two cuts:
- "global" (one continuous recording, e.g. a Stress-Predict session): test windows start after the last
  adaptation window of any class ends, so the head is always tested on a later part of the session;
- "per-class" (one recording per sample, e.g. LIS gestures recorded letter by letter): a class's test
  windows are its windows after its own adaptation windows.
Both take the windows in the order given, which must be time order within a class.
"""

from __future__ import annotations

import numpy as np


def first_windows(t_start: np.ndarray, y: np.ndarray, stream: np.ndarray, cls: int, k: int, window_s: float) -> list[int]:
    """Indices of the first k windows of class `cls` (in order) that do not overlap each other."""
    taken: list[int] = []
    for i in np.flatnonzero(y == cls):
        if all(stream[j] != stream[i] or abs(t_start[i] - t_start[j]) >= window_s - 1e-9 for j in taken):
            taken.append(int(i))
            if len(taken) == k:
                break
    return taken


def adaptation_split(
    t_start: np.ndarray, y: np.ndarray, stream: np.ndarray, n_classes: int, ks: tuple[int, ...], window_s: float,
    cut: str = "global",
) -> tuple[dict[int, np.ndarray], np.ndarray] | None:
    """({k: adaptation indices, the first k per class}, test indices), the same test set for every k;
    None if some class has fewer than max(ks) non-overlapping windows or nothing is left to test."""
    if cut not in ("global", "per-class"):
        raise ValueError(f"cut must be 'global' or 'per-class', got {cut!r}")
    k_max = max(ks)
    firsts = [first_windows(t_start, y, stream, c, k_max, window_s) for c in range(n_classes)]
    if any(len(f) < k_max for f in firsts):
        return None
    adapt = np.array(sorted(i for f in firsts for i in f))
    labelled = np.flatnonzero(y >= 0)
    overlaps = np.zeros(len(y), dtype=bool)
    for j in adapt:
        overlaps |= (stream == stream[j]) & (np.abs(t_start - t_start[j]) < window_s - 1e-9)
    if cut == "global":
        last = adapt.max()
        after = (np.arange(len(y)) > last) & ~((stream == stream[last]) & (t_start < t_start[last] + window_s - 1e-9))
    else:
        after = np.zeros(len(y), dtype=bool)
        for c, f in enumerate(firsts):
            after |= (y == c) & (np.arange(len(y)) > max(f))
    test = labelled[after[labelled] & ~overlaps[labelled]]
    if len(test) == 0 or len(np.unique(y[test])) < 2:
        return None
    return {k: np.array(sorted(i for f in firsts for i in f[:k])) for k in ks}, test
