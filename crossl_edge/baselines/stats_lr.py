"""The "window statistics + logistic regression" baseline that every learned result must stand beside.

Pure numpy (no torch, no scikit-learn, no scipy), so it also runs, and can be re-fitted, on the edge device.

Features (`window_features`), per modality and per channel, in this order:
    mean, std (population, ddof=0), min, max, p10, p25, p50, p75, p90 (linear interpolation, numpy's
    default), mean_abs_diff (mean absolute first difference, 0 for a one-sample window),
and for modalities of kind "emg" additionally
    mean_abs (mean of |x|, the rectified envelope) and rms (sqrt of the mean of x^2).
Columns are modality-major, then channel, then statistic; `feature_names(specs)` names them
"<modality>.<channel>.<stat>" (channel from ModalitySpec.channel_names, else "ch<i>").

Classifier (`LogisticRegression`): multinomial softmax with an L2 penalty on the weights (not the
intercepts), `C` the inverse strength as in scikit-learn, i.e. it minimises

    0.5 * ||W||^2 + C * sum_i s_i * CE_i          (s_i: sample weight, "balanced": n / (K_present * n_class))

which this module divides by C * n (same minimiser, better scaled) and solves with a numpy L-BFGS
(two-loop recursion, strong-Wolfe line search) in preconditioned coordinates: the statistics are
strongly collinear (percentiles of a slow signal nearly coincide), so the weights are rotated onto the
eigenvectors of the feature covariance and rescaled by 1/sqrt(lam/4 + 1/(C n)); the rotation is
orthogonal, so the problem solved is exactly the one above (without it, Stress-Predict at C=10 needs over
1000 iterations; with it, about 15). `tol` bounds max|gradient| in those coordinates. Features are
standardised inside `fit` with training mean and standard deviation (a constant column gets scale 1).
Classes absent from the training labels get probability 0 and decision value -inf. Fitting is deterministic.

Missing modalities (`stats_baseline_scores`): for windows where a modality is absent, its feature columns
are set to the *training mean* of those columns, i.e. exactly 0 after standardisation, so the absent
modality contributes nothing to the logits beyond the intercepts. This is the linear analogue of the
learned models' presence mask; it is not marginalisation over the missing features, and the classifier
was not trained with modalities missing, so subsets score what a model trained on all modalities does
with a part of them, nothing more.

Typical use:

    from crossl_edge.baselines import fit_stats_baseline, stats_baseline_scores
    model, C, val_f1 = fit_stats_baseline(ws.subset(train), ws.subset(val))
    scores = stats_baseline_scores(model, ws.subset(test))   # e.g. {"acc+bvp+eda+temp": 0.57, ..., "temp": 0.51}
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from crossl_edge.data.types import WindowSet
from crossl_edge.metrics import macro_f1
from crossl_edge.spec import ModalitySpec, modality_subsets

log = logging.getLogger(__name__)

#: Statistics computed for every channel of every modality, in column order.
BASE_STATS: tuple[str, ...] = ("mean", "std", "min", "max", "p10", "p25", "p50", "p75", "p90", "mean_abs_diff")
#: Extra statistics for modalities of kind "emg", appended after BASE_STATS.
EMG_STATS: tuple[str, ...] = ("mean_abs", "rms")
_PERCENTILES = (10.0, 25.0, 50.0, 75.0, 90.0)
_CHUNK_VALUES = 1 << 22  # values per modality processed at once (bounds the float64 copies to ~32 MB)

_FORMAT = "crossl_edge.stats_lr.LogisticRegression"
_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------- features


def modality_stats(spec: ModalitySpec) -> tuple[str, ...]:
    """The statistics computed for each channel of `spec`."""
    return BASE_STATS + (EMG_STATS if spec.kind == "emg" else ())


def feature_names(specs: Sequence[ModalitySpec]) -> list[str]:
    """Column names of `window_features`: "<modality>.<channel>.<stat>", modality-major, then channel, then stat."""
    names = []
    for spec in specs:
        channels = spec.channel_names or tuple(f"ch{i}" for i in range(spec.channels))
        names += [f"{spec.name}.{ch}.{stat}" for ch in channels for stat in modality_stats(spec)]
    return names


def modality_columns(specs: Sequence[ModalitySpec]) -> dict[str, np.ndarray]:
    """{modality name: int64 indices of its columns in `window_features`}."""
    out, start = {}, 0
    for spec in specs:
        width = spec.channels * len(modality_stats(spec))
        out[spec.name] = np.arange(start, start + width, dtype=np.int64)
        start += width
    return out


def _channel_stats(x: np.ndarray, emg: bool) -> np.ndarray:
    """[n, C, T] -> [n, C, S] float64, S = len(BASE_STATS) (+ len(EMG_STATS) when emg)."""
    x = x.astype(np.float64, copy=False)
    pct = np.moveaxis(np.percentile(x, _PERCENTILES, axis=-1), 0, -1)  # [n, C, 5]
    if x.shape[-1] > 1:
        mad = np.abs(np.diff(x, axis=-1)).mean(-1)
    else:
        mad = np.zeros(x.shape[:-1])
    cols = [x.mean(-1), x.std(-1), x.min(-1), x.max(-1)]
    cols = [np.stack(cols, -1), pct, mad[..., None]]
    if emg:
        cols.append(np.stack([np.abs(x).mean(-1), np.sqrt(np.square(x).mean(-1))], -1))
    return np.concatenate(cols, -1)


def window_features(ws: WindowSet) -> np.ndarray:
    """Per-window statistics [N, F] float64 (see the module docstring; columns named by `feature_names`).

    Vectorised over windows; large sets are processed in chunks of windows only to bound memory.
    """
    n = len(ws)
    blocks = []
    for spec in ws.specs:
        x = ws.x[spec.name]
        stats = modality_stats(spec)
        out = np.empty((n, spec.channels, len(stats)), dtype=np.float64)
        step = max(1, _CHUNK_VALUES // max(1, spec.channels * spec.window))
        for start in range(0, n, step):
            out[start:start + step] = _channel_stats(x[start:start + step], spec.kind == "emg")
        blocks.append(out.reshape(n, -1))
    return np.concatenate(blocks, 1) if blocks else np.zeros((n, 0))


# ------------------------------------------------------------------------------------------- objective


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(1, keepdims=True)
    return z


def multinomial_objective(
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    sample_weight: np.ndarray,
    C: float,
    penalty: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """(f, grad) of the scaled penalised multinomial cross-entropy at flat parameters `theta`.

    theta = concat(W.ravel(), b) with W [F, K] and b [K]; y holds class indices 0..K-1 (K = n_classes);
    f = sum_i s_i * CE_i / n + sum_j penalty_j ||W_j||^2 / (2 C n) (penalty: per-feature weights, default
    all 1), i.e. the scikit-learn objective divided by C * n. `offset` [n, K] is added to the logits and not
    fitted (fixed logits of another model that this one corrects).
    """
    n, F = X.shape
    K = n_classes
    W = theta[: F * K].reshape(F, K)
    b = theta[F * K:]
    z = X @ W + b
    if offset is not None:
        z = z + offset
    rows = np.arange(n)
    zmax = z.max(1, keepdims=True)
    z_y = z[rows, y] - zmax[:, 0]
    G = np.exp(z - zmax)  # becomes the gradient wrt the logits
    total = G.sum(1)
    ce = np.log(total) - z_y
    pW = W if penalty is None else W * penalty[:, None]
    f = float(sample_weight @ ce) / n + float(np.sum(W * pW)) / (2.0 * C * n)
    G /= total[:, None]
    G[rows, y] -= 1.0
    G *= (sample_weight / n)[:, None]
    gW = X.T @ G + pW / (C * n)
    gb = G.sum(0)
    return f, np.concatenate([gW.ravel(), gb])


def _wolfe_search(fun, x, f0, g0, d, t0, c1=1e-4, c2=0.9, max_evals=30):
    """Strong-Wolfe line search along d (Nocedal & Wright, Algorithms 3.5-3.6, cubic interpolation in zoom).

    Returns (t, f, g) of the accepted point, or None when no step decreasing f was found.
    """
    dg0 = float(g0 @ d)
    t_prev, f_prev, dg_prev = 0.0, f0, dg0
    t = t0
    best = None  # the lowest Armijo point seen, a fallback when the curvature condition is never met
    lo = hi = None
    for i in range(max_evals):
        f, g = fun(x + t * d)
        dg = float(g @ d)
        if np.isfinite(f) and f <= f0 + c1 * t * dg0 and (best is None or f < best[1]):
            best = (t, f, g)
        if lo is None:
            if not np.isfinite(f) or f > f0 + c1 * t * dg0 or (i > 0 and f >= f_prev):
                lo, hi = (t_prev, f_prev, dg_prev), (t, f, dg)
            elif abs(dg) <= -c2 * dg0:
                return t, f, g
            elif dg >= 0:
                lo, hi = (t, f, dg), (t_prev, f_prev, dg_prev)
            else:
                t_prev, f_prev, dg_prev = t, f, dg
                t = 2.0 * t
                continue
        else:
            if not np.isfinite(f) or f > f0 + c1 * t * dg0 or f >= lo[1]:
                hi = (t, f, dg)
            else:
                if abs(dg) <= -c2 * dg0:
                    return t, f, g
                if dg * (hi[0] - lo[0]) >= 0:
                    hi = lo
                lo = (t, f, dg)
        # zoom: next trial by cubic interpolation between lo and hi, kept inside the bracket
        (a, fa, da), (b, fb, db) = lo, hi
        t = _cubic_min(a, fa, da, b, fb, db)
        width = abs(b - a)
        if width <= 1e-14 * max(1.0, abs(a)):
            break
        if t is None or not (min(a, b) + 0.1 * width <= t <= max(a, b) - 0.1 * width):
            t = 0.5 * (a + b)
    return best


def _cubic_min(a, fa, da, b, fb, db):
    """Minimiser of the cubic interpolating f and f' at a and b, or None when it does not exist."""
    if not (np.isfinite(fa) and np.isfinite(fb)):
        return None
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    rad = d1 * d1 - da * db
    if rad < 0:
        return None
    d2 = math.copysign(math.sqrt(rad), b - a)
    denom = db - da + 2.0 * d2
    if denom == 0:
        return None
    return b - (b - a) * (db + d2 - d1) / denom


def _lbfgs(fun, x0: np.ndarray, max_iter: int, tol: float, memory: int = 10) -> tuple[np.ndarray, int, bool]:
    """Minimise a smooth function with L-BFGS (strong-Wolfe line search). Returns (x, iterations, converged).

    Converged when max|grad| <= tol, or when f stops decreasing at machine precision with max|grad| <= 100 tol.
    """
    x = x0.copy()
    f, g = fun(x)
    S: list[np.ndarray] = []
    Y: list[np.ndarray] = []
    rho: list[float] = []
    ftol = 64 * np.finfo(np.float64).eps
    for it in range(1, max_iter + 1):
        if np.max(np.abs(g)) <= tol:
            return x, it - 1, True
        # two-loop recursion: d = -H g
        q = g.copy()
        alpha = []
        for s, yv, r in zip(reversed(S), reversed(Y), reversed(rho)):
            a = r * float(s @ q)
            alpha.append(a)
            q -= a * yv
        if S:
            q *= float(S[-1] @ Y[-1]) / float(Y[-1] @ Y[-1])
        for (s, yv, r), a in zip(zip(S, Y, rho), reversed(alpha)):
            q += (a - r * float(yv @ q)) * s
        d = -q
        if not float(g @ d) < 0:  # not a descent direction (numerical trouble): restart from steepest descent
            S.clear(), Y.clear(), rho.clear()
            d = -g
        t0 = 1.0 if S else 1.0 / max(1.0, float(np.linalg.norm(g)))
        found = _wolfe_search(fun, x, f, g, d, t0)
        if found is None:
            if S:  # retry once along steepest descent with a fresh memory
                S.clear(), Y.clear(), rho.clear()
                d = -g
                found = _wolfe_search(fun, x, f, g, d, 1.0 / max(1.0, float(np.linalg.norm(g))))
            if found is None:
                return x, it, bool(np.max(np.abs(g)) <= 100 * tol)
        t, f_new, g_new = found
        s = t * d
        yv = g_new - g
        sy = float(s @ yv)
        if sy > 1e-10 * float(np.linalg.norm(s)) * float(np.linalg.norm(yv)):
            S.append(s), Y.append(yv), rho.append(1.0 / sy)
            if len(S) > memory:
                S.pop(0), Y.pop(0), rho.pop(0)
        stalled = (f - f_new) <= ftol * max(1.0, abs(f), abs(f_new))
        x, f, g = x + s, f_new, g_new
        if stalled:
            return x, it, bool(np.max(np.abs(g)) <= 100 * tol)
    return x, max_iter, bool(np.max(np.abs(g)) <= tol)


# ------------------------------------------------------------------------------------------ classifier


class LogisticRegression:
    """Multinomial (softmax) logistic regression with L2 penalty, numpy only.

    C: inverse regularisation strength (scikit-learn's meaning). class_weight: "balanced" (default:
    sample weight n / (K_present * n_class)) or None. max_iter / tol: L-BFGS iterations and the bound on
    max|gradient| (in the preconditioned coordinates of the scaled objective) that counts as converged;
    a fit that stops short logs a warning and sets `converged_` False (nearly separable data with a
    large C, e.g. LIS at C >= 100, can need more). Features are standardised inside `fit` with the
    training statistics (`mean_`, `scale_`); `coef_` [K_present, F] and `intercept_` [K_present] act on
    standardised features, for the classes `classes_` seen in training. predict_proba / decision_function
    return n_classes_ columns; unseen classes get probability 0 / decision value -inf.
    """

    def __init__(self, C: float = 1.0, class_weight: str | None = "balanced", max_iter: int = 2000, tol: float = 1e-6):
        if not (C > 0 and math.isfinite(C)):
            raise ValueError(f"C must be a positive finite number, got {C!r}")
        if class_weight not in ("balanced", None):
            raise ValueError(f"class_weight must be 'balanced' or None, got {class_weight!r}")
        self.C = float(C)
        self.class_weight = class_weight
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.feature_names_: list[str] | None = None

    # -- fitting
    def fit(
        self, X: np.ndarray, y: np.ndarray, n_classes: int | None = None, offset: np.ndarray | None = None,
    ) -> "LogisticRegression":
        """Fit on features X [N, F] and class indices y [N]. `offset` [N, n_classes]: fixed logits added to the
        model's, which then learns a correction of them (`decision_function` and `predict` do not add it: a
        caller adds the same offset)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
            raise ValueError(f"X must be [N, F] and y [N]; got X {X.shape}, y {y.shape}")
        if len(y) == 0:
            raise ValueError("cannot fit on zero samples")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise ValueError("y must hold integer class indices >= 0 (drop unlabelled -1 windows first)")
        if not np.isfinite(X).all():
            raise ValueError("X holds NaN or inf; clean the features before fitting")
        n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
        if y.max() >= n_classes:
            raise ValueError(f"y holds class {int(y.max())} but n_classes is {n_classes}")
        if offset is not None:
            offset = np.asarray(offset, dtype=np.float64)
            if offset.shape != (len(y), n_classes) or not np.isfinite(offset).all():
                raise ValueError(f"offset must be finite [N, n_classes] = {(len(y), n_classes)}, got {offset.shape}")
        self.n_classes_ = n_classes
        self.n_features_in_ = X.shape[1]
        self.mean_ = X.mean(0)
        scale = X.std(0)
        self.scale_ = np.where(scale > 1e-12 * np.maximum(1.0, np.abs(self.mean_)), scale, 1.0)
        Xs = (X - self.mean_) / self.scale_

        self.classes_ = np.unique(y).astype(np.int64)
        k = len(self.classes_)
        yi = np.searchsorted(self.classes_, y)
        counts = np.bincount(yi, minlength=k).astype(np.float64)
        if self.class_weight == "balanced":
            sw = (len(y) / (k * counts))[yi]
        else:
            sw = np.ones(len(y))
        F = X.shape[1]
        if k == 1:
            self.coef_ = np.zeros((1, F))
            self.intercept_ = np.zeros(1)
            self.n_iter_, self.converged_ = 0, True
            return self
        # Precondition: the features are strongly collinear (percentiles of a slow signal nearly coincide), so
        # solve in rotated, rescaled coordinates W = T @ V with T = E diag(d), E the eigenvectors of the feature
        # covariance (eigenvalues lam) and d = 1 / sqrt(lam / 4 + 1 / (C n)), which roughly whitens the Hessian.
        # E is orthogonal, so the penalty ||W||^2 becomes sum_j d_j^2 ||V_j||^2: the same problem, exactly.
        n = len(y)
        lam, E = np.linalg.eigh(Xs.T @ Xs / n)
        d = 1.0 / np.sqrt(0.25 * np.clip(lam, 0.0, None) + 1.0 / (self.C * n))
        T = E * d
        Z = Xs @ T
        off = None if offset is None else offset[:, self.classes_]
        theta, self.n_iter_, self.converged_ = _lbfgs(
            lambda t: multinomial_objective(t, Z, yi, k, sw, self.C, d * d, off), np.zeros((F + 1) * k), self.max_iter,
            self.tol,
        )
        if not self.converged_:
            log.warning("LogisticRegression(C=%g) did not converge in %d iterations", self.C, self.n_iter_)
        self.coef_ = (T @ theta[: F * k].reshape(F, k)).T.copy()
        self.intercept_ = theta[F * k:].copy()
        return self

    # -- inference
    def _check(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise RuntimeError("LogisticRegression is not fitted; call fit() or from_dict() first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must be [N, {self.n_features_in_}], got {X.shape}")
        return X

    def _present_logits(self, X: np.ndarray) -> np.ndarray:
        Xs = (self._check(X) - self.mean_) / self.scale_
        return Xs @ self.coef_.T + self.intercept_

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits [N, n_classes_]; -inf for classes absent from training."""
        z = self._present_logits(X)
        out = np.full((len(z), self.n_classes_), -np.inf)
        out[:, self.classes_] = z
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities [N, n_classes_] (0 for classes absent from training)."""
        p = _softmax(self._present_logits(X))
        out = np.zeros((len(p), self.n_classes_))
        out[:, self.classes_] = p
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """int64 class indices [N] (argmax; ties go to the lower class index)."""
        return self.classes_[np.argmax(self._present_logits(X), 1)]

    # -- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-able weights (plain lists and numbers; float64 values round-trip exactly through json)."""
        self._check(np.zeros((0, getattr(self, "n_features_in_", 0))))
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "C": self.C,
            "class_weight": self.class_weight,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "n_classes": int(self.n_classes_),
            "classes": [int(c) for c in self.classes_],
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_.tolist(),
            "n_iter": int(self.n_iter_),
            "converged": bool(self.converged_),
            "feature_names": list(self.feature_names_) if self.feature_names_ is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LogisticRegression":
        if d.get("format") != _FORMAT or d.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"not a {_FORMAT} v{_FORMAT_VERSION} dict (format={d.get('format')!r}, version={d.get('version')!r})"
            )
        m = cls(C=d["C"], class_weight=d["class_weight"], max_iter=d["max_iter"], tol=d["tol"])
        m.n_classes_ = int(d["n_classes"])
        m.classes_ = np.asarray(d["classes"], dtype=np.int64)
        m.mean_ = np.asarray(d["mean"], dtype=np.float64)
        m.scale_ = np.asarray(d["scale"], dtype=np.float64)
        m.coef_ = np.asarray(d["coef"], dtype=np.float64).reshape(len(m.classes_), len(m.mean_))
        m.intercept_ = np.asarray(d["intercept"], dtype=np.float64)
        m.n_features_in_ = len(m.mean_)
        m.n_iter_ = int(d.get("n_iter", 0))
        m.converged_ = bool(d.get("converged", True))
        m.feature_names_ = list(d["feature_names"]) if d.get("feature_names") is not None else None
        if m.scale_.shape != m.mean_.shape or m.intercept_.shape != m.classes_.shape:
            raise ValueError("inconsistent shapes in LogisticRegression dict")
        return m


# ----------------------------------------------------------------------------------------- the baseline


def _labelled(ws: WindowSet) -> tuple[np.ndarray, np.ndarray]:
    keep = np.asarray(ws.y) >= 0
    return window_features(ws.subset(np.flatnonzero(keep))), np.asarray(ws.y)[keep].astype(np.int64)


def fit_stats_baseline(
    train_ws: WindowSet,
    val_ws: WindowSet | None,
    Cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    class_weight: str | None = "balanced",
) -> tuple[LogisticRegression, float, float]:
    """Fit window statistics + LR on the labelled windows of `train_ws` for each C in `Cs`.

    Returns (model fitted on train with the chosen C, chosen C, its validation macro-F1). C is chosen by
    macro-F1 on the labelled windows of `val_ws` (ties: the first, i.e. the earlier C in `Cs`). With
    val_ws None, Cs must hold one value and the returned macro-F1 is nan.
    """
    Cs = tuple(float(c) for c in Cs)
    if not Cs:
        raise ValueError("Cs is empty")
    if val_ws is None and len(Cs) != 1:
        raise ValueError("choosing among several Cs needs val_ws")
    if val_ws is not None and tuple(s.name for s in val_ws.specs) != tuple(s.name for s in train_ws.specs):
        raise ValueError("train_ws and val_ws have different modalities")
    n_classes = len(train_ws.class_names)
    X, y = _labelled(train_ws)
    if len(y) == 0:
        raise ValueError("train_ws has no labelled windows")
    names = feature_names(train_ws.specs)
    if val_ws is not None:
        Xv, yv = _labelled(val_ws)
        if len(yv) == 0:
            raise ValueError("val_ws has no labelled windows")
    best: tuple[LogisticRegression, float, float] | None = None
    for C in Cs:
        model = LogisticRegression(C=C, class_weight=class_weight).fit(X, y, n_classes)
        model.feature_names_ = names
        score = float("nan") if val_ws is None else macro_f1(yv, model.predict(Xv), n_classes)
        log.debug("stats+LR C=%g: val macro-F1 %.4f (%d iterations)", C, score, model.n_iter_)
        if best is None or score > best[2]:
            best = (model, C, score)
    return best


def stats_baseline_scores(
    model: LogisticRegression, ws: WindowSet, subsets: Sequence[Sequence[str]] | None = None
) -> dict[str, float]:
    """Macro-F1 on the labelled windows of `ws` per subset of present modalities, keyed "acc+eda" etc.

    Absent modalities' feature columns are replaced by the model's training mean (0 after
    standardisation); see the module docstring. `subsets` defaults to every non-empty subset, largest first.
    """
    names = ws.names
    if model.feature_names_ is not None and model.feature_names_ != feature_names(ws.specs):
        raise ValueError("the model was fitted on different features than `ws` gives (other modalities or channels)")
    X, y = _labelled(ws)
    return scores_per_subset(X, y, names, modality_columns(ws.specs), model.mean_, model.predict, model.n_classes_, subsets)


def scores_per_subset(
    X: np.ndarray, y: np.ndarray, names: Sequence[str], columns: dict[str, np.ndarray], train_mean: np.ndarray,
    predict, n_classes: int, subsets: Sequence[Sequence[str]] | None = None,
) -> dict[str, float]:
    """Macro-F1 of `predict` on features X per subset of present modalities: an absent modality's `columns` are
    set to their training mean (0 after standardisation). Shared by the feature-based references."""
    subsets = modality_subsets(names) if subsets is None else [tuple(s) for s in subsets]
    scores: dict[str, float] = {}
    for subset in subsets:
        unknown = set(subset) - set(names)
        if unknown or not subset:
            raise ValueError(f"bad subset {list(subset)}: modalities must be a non-empty part of {list(names)}")
        Xs = X.copy()
        for name in names:
            if name not in subset:
                Xs[:, columns[name]] = train_mean[columns[name]]
        scores["+".join(subset)] = macro_f1(y, predict(Xs), n_classes)
    return scores
