"""Fitting a personalised head on a few global embeddings, in numpy (runs on the device).

Three kinds, all linear in the global embedding g (so the runtime applies any of them the same way,
`crossl_edge.runtime.head.LinearHead`):

- "residual": multinomial logistic regression on g that corrects the bundle's own logits (a new head
  pulled towards the generic one by the L2 penalty); it keeps the bundle's classes.
- "logreg": multinomial logistic regression on g alone (L2, balanced classes); any classes.
- "prototype": nearest class mean of g, with logits -||g - mean_k||^2 / (2 s^2), s^2 the pooled variance
  of g over the collected windows; any classes.

Which is the default, and its penalty, were chosen by measurement (benchmarks/personalize.py, on the
validation subjects of the demo run's split; the results file gives the numbers).
"""

from __future__ import annotations

import numpy as np

from crossl_edge.baselines.stats_lr import LogisticRegression
from crossl_edge.runtime.head import LinearHead

HEADS = ("residual", "logreg", "prototype")
DEFAULT_HEAD = "residual"
DEFAULT_C = 0.001  # inverse L2 strength of the logistic heads (scikit-learn's C); chosen as the head kind was
MIN_PER_CLASS = 1


class PersonalizeError(ValueError):
    """Too few or unusable windows to fit a head; the message says what is needed."""


def check_counts(y: np.ndarray, class_names: tuple[str, ...], need: int) -> dict[str, int]:
    """Windows per class; raises PersonalizeError naming every class short of `need`."""
    counts = {c: int((y == i).sum()) for i, c in enumerate(class_names)}
    short = {c: n for c, n in counts.items() if n < need}
    if short:
        raise PersonalizeError(
            "too few labelled windows to fit a head: " + ", ".join(f"{c} has {n}" for c, n in short.items())
            + f"; every class needs at least {need} (--min-per-class), "
            f"{max(need, 5)} or more per class is what raised macro-F1 in the measurements"
        )
    return counts


def fit_head(
    kind: str, g: np.ndarray, y: np.ndarray, n_classes: int, base_logits: np.ndarray | None = None,
    C: float = DEFAULT_C,
) -> LinearHead:
    """A head of `kind` fitted on global embeddings g [N, G] with class indices y [N] (every class present)."""
    g = np.asarray(g, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if kind not in HEADS:
        raise PersonalizeError(f"unknown head {kind!r}; choose from {', '.join(HEADS)}")
    if g.ndim != 2 or len(g) != len(y) or len(y) == 0:
        raise PersonalizeError(f"need embeddings [N, G] and N labels; got {g.shape} and {y.shape}")
    if not np.isfinite(g).all():
        raise PersonalizeError("the global embeddings hold NaN or infinite values")
    missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise PersonalizeError(f"classes {missing} have no window; every class needs windows")
    if kind == "prototype":
        means = np.stack([g[y == k].mean(0) for k in range(n_classes)])
        var = max(float(((g - means[y]) ** 2).mean()), float(g.var(0).mean()) * 1e-2, 1e-12)
        return LinearHead(means / var, -(means**2).sum(1) / (2 * var), residual=False)
    if kind == "residual":
        if base_logits is None or np.shape(base_logits) != (len(y), n_classes):
            raise PersonalizeError(f"a residual head needs the bundle's logits [N, {n_classes}] of the same windows")
    lr = LogisticRegression(C=C).fit(g, y, n_classes, offset=base_logits if kind == "residual" else None)
    w = lr.coef_ / lr.scale_  # from standardised features back to g itself
    return LinearHead(w, lr.intercept_ - w @ lr.mean_, residual=kind == "residual")
