"""Evaluation splits that do not leak: by subject, by group (recording day), and label-fraction sampling.

- `subject_splits`: train/val/test by subject, several seeded splits. Test sets rotate through a random
  order of the subjects, so with n_splits * n_test <= n_subjects the test sets are disjoint (every subject
  is tested at most once) before any subject repeats; more splits continue with a fresh order.
- `leave_group_out`: train on every group but one (LIS: hold out the day 2020-07-09, the only day with all
  letters). A random split of LIS leaks session and time (see its SOURCE.md); use this instead.
- `stratified_kfold`: class-stratified folds over windows, for within-day protocols only.
- `sample_labels`: the few-label setting: a stratified subset of the labelled training windows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from crossl_edge.data.types import DataError, WindowSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Disjoint subject sets. Subjects are strings as in WindowSet.subject."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def indices(self, windowset: WindowSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train_idx, val_idx, test_idx) int64 window indices of `windowset`, by its subject column."""
        subj = np.asarray(windowset.subject).astype(str)
        train, val, test = (np.flatnonzero(np.isin(subj, np.array(part, dtype=str)))
                            for part in (self.train, self.val, self.test))
        return train, val, test

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def check_no_leak(split: Split, windowset: WindowSet | None = None) -> None:
    """Raise DataError if a subject is in two parts of `split` (or, given `windowset`, a window in two parts)."""
    parts = {"train": set(split.train), "val": set(split.val), "test": set(split.test)}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = parts[a] & parts[b]
        if shared:
            raise DataError(f"split leaks: subjects {sorted(shared)} are in both {a} and {b}")
    if windowset is not None:
        tr, va, te = split.indices(windowset)
        if len(np.intersect1d(tr, va)) or len(np.intersect1d(tr, te)) or len(np.intersect1d(va, te)):
            raise DataError("split leaks: a window index falls in two parts")


def _count(fraction: float, n: int, what: str) -> int:
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"{what} must be within [0, 1), got {fraction!r}")
    return 0 if fraction == 0 else max(1, int(round(fraction * n)))


def subject_splits(
    subjects: Sequence[str] | np.ndarray,
    n_splits: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> list[Split]:
    """`n_splits` seeded subject-wise splits of the unique `subjects` (duplicates, e.g. a window column, are fine).

    A non-zero fraction gives at least one subject; train keeps at least one. Same arguments -> same splits.
    """
    uniq = sorted({str(s) for s in np.asarray(subjects).tolist()})
    n = len(uniq)
    if n_splits < 1:
        raise DataError(f"n_splits must be >= 1, got {n_splits}")
    n_test = _count(test_fraction, n, "test_fraction")
    n_val = _count(val_fraction, n, "val_fraction")
    if n - n_test - n_val < 1:
        raise DataError(
            f"{n} subjects cannot give {n_test} test and {n_val} validation subjects and still leave one to train; "
            "lower the fractions"
        )
    rng = np.random.default_rng(seed)
    queue: list[str] = []
    splits = []
    for _ in range(n_splits):
        test: list[str] = []
        deferred: list[str] = []
        while len(test) < n_test:
            if not queue:
                queue = [uniq[i] for i in rng.permutation(n)]
            s = queue.pop(0)
            (deferred if s in test else test).append(s)
        queue = deferred + queue
        rest = [uniq[i] for i in rng.permutation(n) if uniq[i] not in test]
        split = Split(train=tuple(sorted(rest[n_val:])), val=tuple(sorted(rest[:n_val])), test=tuple(sorted(test)))
        check_no_leak(split)
        splits.append(split)
    return splits


def leave_group_out(groups: Sequence[str] | np.ndarray, test_group: str) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): windows outside / inside `test_group` (e.g. the LIS day "2020-07-09")."""
    groups = np.asarray(groups).astype(str)
    if test_group not in set(groups.tolist()):
        raise DataError(f"group {test_group!r} not found; groups present: {', '.join(sorted(set(groups.tolist())))}")
    mask = groups == test_group
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def stratified_kfold(y: Sequence[int] | np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train_idx, test_idx) folds; each class is dealt round-robin over the folds after a seeded shuffle.

    Every index is in exactly one test fold. Only for protocols within one session/day: across days or
    subjects use leave_group_out or subject_splits.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"y must be 1-D, got shape {y.shape}")
    if not 2 <= k <= len(y):
        raise DataError(f"k must be within [2, {len(y)}] for {len(y)} samples, got {k}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < k:
            log.warning("class %s has %d samples, fewer than k=%d folds: some test folds lack it", c, len(idx), k)
        idx = rng.permutation(idx)
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)  # start the next class where this one stopped, so fold sizes stay balanced
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def sample_labels(
    y: Sequence[int] | np.ndarray,
    fraction: float | None = None,
    per_class: int | None = None,
    seed: int = 0,
    min_per_class: int = 1,
) -> np.ndarray:
    """Sorted indices of a stratified subset of the labelled entries (y >= 0) of `y`.

    Give exactly one of `fraction` (of each class, rounded) or `per_class` (a count per class). Every
    class present keeps at least `min_per_class` (capped at its size), so 1% of a small set still holds
    every class. Unlabelled entries (-1) are never returned.
    """
    if (fraction is None) == (per_class is None):
        raise DataError("give exactly one of fraction= or per_class=")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise DataError(f"fraction must be within (0, 1], got {fraction!r}")
    if per_class is not None and per_class < 1:
        raise DataError(f"per_class must be >= 1, got {per_class!r}")
    if min_per_class < 0:
        raise DataError(f"min_per_class must be >= 0, got {min_per_class!r}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y[y >= 0]):
        idx = np.flatnonzero(y == c)
        want = int(round(fraction * len(idx))) if fraction is not None else int(per_class)  # type: ignore[arg-type]
        want = min(len(idx), max(want, min_per_class))
        chosen.append(rng.choice(idx, size=want, replace=False))
    if not chosen:
        raise DataError("y holds no labelled entries (all are -1)")
    return np.sort(np.concatenate(chosen)).astype(np.int64)
