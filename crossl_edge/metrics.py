"""Classification metrics in numpy (no torch: the runtime's replay scores itself with these)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[K, K] counts, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over classes of F1, over the classes present in y_true or y_pred.

    This is the macro-F1 of the whole evaluation set (not a batch average, and not thresholded per
    class), the metric the official CroSSL code mislabels.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    tp = np.diag(cm)
    support = cm.sum(1)
    predicted = cm.sum(0)
    seen = (support + predicted) > 0
    if not seen.any():
        return float("nan")
    f1 = np.where(seen, 2 * tp / np.maximum(support + predicted, 1), 0.0)
    return float(f1[seen].mean())
