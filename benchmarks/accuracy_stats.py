"""Intervals for the accuracy benchmark that include test sampling: a bootstrap over test units.

A test unit is what the test set samples: a subject for subject-wise splits (windows of one person are not
independent evidence), a gesture for LIS's held-out day. Each draw resamples every split's test units with
replacement (splits that share one test set, such as the repeats of the held-out day, share the draw, so
they are not counted as independent evidence), scores macro-F1 per split on the drawn windows and averages
over splits. Differences between methods are paired: both use the same draws.
"""

from __future__ import annotations

import numpy as np

N_DRAWS = 1000


def _macro_f1_rows(y: np.ndarray, pred: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """macro-F1 for each row of `weights` [R, N] (how often each window was drawn), in one pass."""
    tp = np.zeros((len(weights), k))
    support = np.zeros((len(weights), k))
    predicted = np.zeros((len(weights), k))
    for c in range(k):
        yc, pc = y == c, pred == c
        support[:, c] = weights[:, yc].sum(1)
        predicted[:, c] = weights[:, pc].sum(1)
        tp[:, c] = weights[:, yc & pc].sum(1)
    seen = (support + predicted) > 0
    f1 = np.where(seen, 2 * tp / np.maximum(support + predicted, 1), 0.0)
    return (f1 * seen).sum(1) / np.maximum(seen.sum(1), 1)


def draw_weights(units: list[np.ndarray], n_draws: int = N_DRAWS, seed: int = 0) -> list[np.ndarray]:
    """Per split, a [n_draws, N_split] array of how often each test window is drawn. Splits whose unit lists
    are identical share the draw."""
    rng = np.random.default_rng(seed)
    cache: dict[bytes, np.ndarray] = {}
    out = []
    for u in units:
        key = np.asarray(u).astype(str).tobytes()
        if key not in cache:
            names, inverse = np.unique(u, return_inverse=True)
            counts = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=n_draws)  # [D, U]
            cache[key] = counts[:, inverse].astype(np.float64)  # a drawn unit brings all its windows
        out.append(cache[key])
    return out


def bootstrap_means(y: list[np.ndarray], preds: list[np.ndarray], weights: list[np.ndarray], k: int) -> np.ndarray:
    """[n_draws] mean over splits of the drawn macro-F1."""
    return np.mean([_macro_f1_rows(yi, pi, wi, k) for yi, pi, wi in zip(y, preds, weights)], axis=0)


def interval(estimate: float, draws: np.ndarray) -> tuple[float, float]:
    """95% interval: the estimate ± 1.96 bootstrap standard errors. Not the draws' percentiles: a resample that
    holds one class's windows twice and another's not at all scores lower, so macro-F1's bootstrap
    distribution sits below the estimate (on LIS's 78 test gestures, 3 per letter, by about 0.04)."""
    se = float(np.std(draws, ddof=1))
    return estimate - 1.96 * se, estimate + 1.96 * se
