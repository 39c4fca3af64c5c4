"""Evaluation protocols: how a WindowSet is split into train / validation / test windows.

- "subjects": subject-wise; split k of n (seeded) rotates the test subjects so n splits cover everyone
  once when test_fraction = 1/n; validation subjects are drawn from the rest. No subject is in two parts.
- "group:<name>": leave one group out (for LIS EMG-IMU, the recording day "2020-07-09", the only day
  with every letter); validation is time-separated: the *last* windows of each class in each remaining
  group (data order is recording order, which the loaders keep in time order), so validation sits at the
  end of each block like a later session, not among random neighbours of training windows. Training
  windows of the same subject and group that overlap a validation window in time are dropped. What it
  cannot see: a new day's change of armband placement or skin contact; it only sees drift within a day.
- "kfold:<k>": stratified k-fold over windows (fold = split index), validation a stratified part of the
  training folds. Only meaningful within one session: on LIS it leaks session and time (SOURCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossl_edge.data.splits import leave_group_out, stratified_kfold, subject_splits
from crossl_edge.data.types import DataError, WindowSet


@dataclass
class SplitIndices:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    description: dict


def _stratified_holdout(idx: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split `idx` into (rest, held) with `fraction` of each class (at least one) held out."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y[idx]):
        members = idx[y[idx] == c]
        k = max(1, int(round(fraction * len(members)))) if len(members) > 1 else 0
        held.append(rng.choice(members, size=k, replace=False))
    held_idx = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    return np.setdiff1d(idx, held_idx), held_idx


def _time_separated_holdout(idx: np.ndarray, ws: WindowSet, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split `idx` into (rest, held): per group and class, the last `fraction` of its windows (at least one,
    and never a class's only window of that group) in data order, i.e. time order."""
    held = []
    for g in np.unique(ws.group[idx]):
        in_group = idx[ws.group[idx] == g]
        for c in np.unique(ws.y[in_group]):
            members = np.sort(in_group[ws.y[in_group] == c])
            k = max(1, int(round(fraction * len(members)))) if len(members) > 1 else 0
            if k:
                held.append(members[-k:])
    held_idx = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    return np.setdiff1d(idx, held_idx), held_idx


def _drop_overlapping(train: np.ndarray, val: np.ndarray, ws: WindowSet) -> np.ndarray:
    """`train` without the windows that share samples with a validation window of the same recording."""
    if len(val) == 0 or len(train) == 0:
        return train
    rec = ws.recording_ids()
    length = ws.specs[0].window_seconds
    keep = np.ones(len(train), dtype=bool)
    for r in np.intersect1d(rec[val], rec[train]):
        starts = ws.t_start[val[rec[val] == r]]
        cand = np.flatnonzero(rec[train] == r)
        gap = np.abs(ws.t_start[train[cand]][:, None] - starts[None, :]).min(1)
        keep[cand[gap < length - 1e-9]] = False
    return train[keep]


def split_windows(
    ws: WindowSet,
    protocol: str = "subjects",
    split: int = 0,
    n_splits: int = 5,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> SplitIndices:
    """Window indices for split number `split` (0-based) of `protocol` (see the module docstring).

    `n_splits` applies to the subject-wise protocol; for "group:" the parts are the same for every `split` (its
    validation is the last windows, not a draw): repeats differ only by the seeds callers derive from `split`."""
    if protocol == "subjects":
        if not 0 <= split < n_splits:
            raise DataError(f"split must be in 0..{n_splits - 1} for {n_splits} subject-wise splits, got {split}")
        subjects = np.unique(ws.subject)
        if len(subjects) < 3:
            raise DataError(
                f"the subject-wise protocol needs at least 3 subjects, this data has {len(subjects)}; "
                "use --protocol group:<name> or kfold:<k>"
            )
        parts = subject_splits(subjects, n_splits, val_fraction, 1.0 / n_splits, seed)[split]
        tr, va, te = parts.indices(ws)
        return SplitIndices(tr, va, te, {"protocol": protocol, "split": split, **parts.to_dict()})
    if protocol.startswith("group:"):
        group = protocol.split(":", 1)[1]
        rest, te = leave_group_out(ws.group, group)
        labelled = rest[ws.y[rest] >= 0]
        tr, va = _time_separated_holdout(labelled, ws, val_fraction)
        tr = np.union1d(tr, rest[ws.y[rest] < 0])  # unlabelled windows still serve pretraining
        tr = _drop_overlapping(tr, va, ws)
        return SplitIndices(tr, va, te, {"protocol": protocol, "split": split, "test_group": group,
                                         "validation": "time-separated: the last windows of each class per group"})
    if protocol.startswith("kfold:"):
        try:
            k = int(protocol.split(":", 1)[1])
        except ValueError:
            raise DataError(f"protocol {protocol!r}: expected kfold:<k> with an integer k") from None
        if not 0 <= split < k:
            raise DataError(f"split must be in 0..{k - 1} for {protocol}, got {split}")
        labelled = np.flatnonzero(ws.y >= 0)
        folds = stratified_kfold(ws.y[labelled], k, seed)
        tr_local, te_local = folds[split]
        tr, va = _stratified_holdout(labelled[tr_local], ws.y, val_fraction, seed + split)
        return SplitIndices(tr, va, labelled[te_local], {"protocol": protocol, "split": split, "fold": split,
                                                         "caveat": "within-session: leaks session and time"})
    raise DataError(f"unknown protocol {protocol!r}; valid: subjects, group:<name>, kfold:<k>")
