"""Evaluation protocols: how a WindowSet is split into train / validation / test windows.

- "subjects": subject-wise; split k of n (seeded) rotates the test subjects so n splits cover everyone
  once when test_fraction = 1/n; validation subjects are drawn from the rest. No subject is in two parts.
- "group:<name>": leave one group out (for LIS EMG-IMU, the recording day "2020-07-09", the only day
  with every letter); validation is a stratified part of the other groups.
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


def split_windows(
    ws: WindowSet,
    protocol: str = "subjects",
    split: int = 0,
    n_splits: int = 5,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> SplitIndices:
    """Window indices for split number `split` (0-based) of `protocol` (see the module docstring).

    `n_splits` applies to the subject-wise protocol; for "group:" `split` only reseeds the validation draw."""
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
        tr, va = _stratified_holdout(labelled, ws.y, val_fraction, seed + split)
        tr = np.union1d(tr, rest[ws.y[rest] < 0])  # unlabelled windows still serve pretraining
        return SplitIndices(tr, va, te, {"protocol": protocol, "split": split, "test_group": group})
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
        return SplitIndices(tr, va, labelled[te_local], {"protocol": protocol, "split": split, "fold": split})
    raise DataError(f"unknown protocol {protocol!r}; valid: subjects, group:<name>, kfold:<k>")
