"""MiniRocket reference baseline: random convolutional features per modality + a balanced ridge classifier.

The reference a time-series practitioner would pick instead of a learned encoder (issue 13). It needs the
`minirocket` extra (aeon, which brings numba): ``pip install '.[minirocket]'``. This module imports without
it (aeon is imported when a model is fitted) and the edge runtime never imports it.

Features (`MiniRocketBaseline.features`): for every modality, at its native rate, aeon's MiniRocket transform
(``aeon.transformations.collection.convolution_based.MiniRocket``, multivariate over that modality's channels)
fitted on the windows of `train_ws` (labels unused: MiniRocket only draws its biases from training windows);
the per-modality features are concatenated, modality-major in `specs` order. `n_kernels` is aeon's `n_kernels`
per modality, which aeon rounds down to a multiple of 84 (minimum 84): 2,000 gives 1,932 features per
modality. MiniRocket needs windows of at least 9 samples; a shorter modality (e.g. a 2 s window of a 4 Hz
signal) is padded to 9 samples by repeating its edge samples (first sample on the left, last on the right,
the extra one on the right), identically in fit and transform. Each modality's transform is seeded from
`seed` and the modality's position, so fits are deterministic; aeon's global `np.random.seed` call is undone
(the caller's numpy global random state is left as it was).

Classifier: ridge regression on +-1 one-hot targets (as scikit-learn's RidgeClassifier), with "balanced"
sample weights n / (K_present * n_class), features standardised with training mean and standard deviation
(a constant column gets scale 1), an unpenalised intercept, minimising

    sum_i s_i ||t_i - W x_i - b||^2 + alpha * n * ||W||^2

(alpha is per training window, so one grid fits any budget). alpha is chosen by macro-F1 on the labelled
windows of `val_ws` from `alphas` (ties: the earlier, i.e. the stronger penalty with the default grid);
nothing else is looked at. Ridge rather than the package's logistic regression because the latter
eigendecomposes the F x F feature covariance per C (about 90 s at F = 7,728 on a 2-core machine), while
ridge needs one linear solve per alpha in the smaller of the primal (F x F) and dual (n x n) forms.

Missing modalities (`minirocket_baseline_scores`): as in the statistics baseline, an absent modality's
feature columns are set to their training mean (0 after standardisation), so it adds nothing to the scores
beyond the intercepts; the classifier was not trained with modalities missing.

Typical use:

    from crossl_edge.baselines.minirocket import fit_minirocket_baseline, minirocket_baseline_scores
    model, alpha, val_f1 = fit_minirocket_baseline(ws.subset(train), ws.subset(val), n_kernels=2000, seed=0)
    scores = minirocket_baseline_scores(model, ws.subset(test))   # {"acc+bvp+eda+temp": ..., "temp": ...}
"""

from __future__ import annotations

from contextlib import contextmanager

import logging
import math
import time
from typing import Mapping, Sequence

import numpy as np

from crossl_edge.data.types import WindowSet
from crossl_edge.metrics import macro_f1
from crossl_edge.baselines.stats_lr import scores_per_subset
from crossl_edge.spec import ModalitySpec

log = logging.getLogger(__name__)

#: aeon's `n_kernels` per modality by default (rounded down by aeon to 1,932 features per modality).
DEFAULT_N_KERNELS = 2000
#: ridge penalties tried, strongest first (alpha multiplies n * ||W||^2; see the module docstring).
DEFAULT_ALPHAS: tuple[float, ...] = (1000.0, 100.0, 10.0, 1.0, 0.1, 0.01, 0.001)
#: MiniRocket's shortest window (its kernels have 9 taps); shorter windows are edge-padded to this length.
MIN_LENGTH = 9

_EXTRA_HINT = "MiniRocket needs the `minirocket` extra: pip install '.[minirocket]' (or pip install aeon==1.6.0)"


def _minirocket_class():
    """aeon's MiniRocket transformer class, imported on first use."""
    try:
        from aeon.transformations.collection.convolution_based import MiniRocket
    except ImportError as e:  # aeon absent, or numba missing/broken underneath it
        raise ImportError(f"{_EXTRA_HINT} ({e})") from e
    return MiniRocket


@contextmanager
def _thread_limits_kept():
    """aeon sets numba's thread count around each call, and numba's OpenMP layer shares the process's OpenMP
    runtime with torch: after a transform, torch ran on as many threads as the machine has cores whatever
    torch.set_num_threads said (measured: 50 training steps 4.9 s before, 10.8 s after, 3 s per step with two
    benchmarks side by side). Put every thread pool back as it was."""
    from threadpoolctl import threadpool_limits

    limits = threadpool_limits(limits=None)  # records the current limits, changes nothing
    try:
        yield
    finally:
        limits.restore_original_limits()


def pad_to_min_length(x: np.ndarray, length: int = MIN_LENGTH) -> np.ndarray:
    """[N, C, T] float32 windows edge-padded on the time axis to `length` samples when T < length (else as is)."""
    t = x.shape[-1]
    if t >= length:
        return x
    if t == 0:
        raise ValueError("windows of 0 samples cannot be transformed")
    left = (length - t) // 2
    return np.pad(x, ((0, 0), (0, 0), (left, length - t - left)), mode="edge")


def _modality_seed(seed: int, position: int) -> int:
    return int(np.random.SeedSequence([int(seed), position]).generate_state(1)[0] % (2**31 - 1))


def _same_layout(specs: Sequence[ModalitySpec], ws: WindowSet, what: str) -> None:
    want = [(s.name, s.channels, s.window) for s in specs]
    got = [(s.name, s.channels, s.window) for s in ws.specs]
    if want != got:
        raise ValueError(
            f"{what} has modalities {got} (name, channels, samples per window) but the model was fitted on {want}"
        )


def _labels_of(ws: WindowSet) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(ws.y)
    keep = np.flatnonzero(y >= 0)
    return keep, y[keep].astype(np.int64)


# ------------------------------------------------------------------------------------------- classifier


class BalancedRidge:
    """Multi-class ridge on +-1 targets with balanced sample weights, fitted for several alphas at once.

    `fit_path` standardises X, centres it with weighted means (unpenalised intercept) and returns one
    (coef [K_present, F], intercept [K_present]) per alpha; scores are X_std @ coef.T + intercept.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, n_classes: int):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) != len(y) or len(y) == 0:
            raise ValueError(f"X must be [N, F] with N = len(y) > 0; got X {X.shape}, y {np.shape(y)}")
        if not np.isfinite(X).all():
            raise ValueError("features hold NaN or inf (are there NaN samples in the windows?)")
        self.n_classes = int(n_classes)
        self.mean = X.mean(0)
        scale = X.std(0)
        self.scale = np.where(scale > 1e-12 * np.maximum(1.0, np.abs(self.mean)), scale, 1.0)
        self.classes = np.unique(y).astype(np.int64)
        yi = np.searchsorted(self.classes, y)
        k = len(self.classes)
        counts = np.bincount(yi, minlength=k).astype(np.float64)
        s = (len(y) / (k * counts))[yi]
        T = -np.ones((len(y), k))
        T[np.arange(len(y)), yi] = 1.0
        A = X - self.mean  # standardised, weighted-centred and sqrt(s)-scaled in place (one copy of X)
        A /= self.scale
        self._xm = s @ A / s.sum()
        self._tm = s @ T / s.sum()
        r = np.sqrt(s)[:, None]
        A -= self._xm
        A *= r
        self._A = A
        self._B = r * (T - self._tm)
        n, F = self._A.shape
        self._primal = F <= n
        self._gram = self._A.T @ self._A if self._primal else self._A @ self._A.T

    def solve(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """(coef [K_present, F], intercept [K_present]) for one alpha."""
        n = self._A.shape[0]
        reg = float(alpha) * n
        G = self._gram.copy()
        G[np.diag_indices_from(G)] += reg
        if self._primal:
            W = np.linalg.solve(G, self._A.T @ self._B)
        else:
            W = self._A.T @ np.linalg.solve(G, self._B)
        return W.T.copy(), self._tm - self._xm @ W


class MiniRocketBaseline:
    """A fitted MiniRocket-per-modality + balanced ridge classifier (see the module docstring).

    Attributes: specs, n_kernels (requested per modality), seed, alpha, transformers ({modality: fitted
    aeon MiniRocket}), n_features ({modality: features it gives}), columns ({modality: int64 column
    indices}), mean_ / scale_ (training standardisation), classes_, coef_ [K_present, F], intercept_,
    n_classes_, fit_seconds.
    """

    def __init__(self, specs, n_kernels, seed, transformers, n_jobs):
        self.specs: tuple[ModalitySpec, ...] = tuple(specs)
        self.n_kernels: dict[str, int] = dict(n_kernels)
        self.seed = int(seed)
        self.transformers = transformers
        self.n_jobs = n_jobs
        self.n_features: dict[str, int] = {}
        self.columns: dict[str, np.ndarray] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def features(self, ws: WindowSet) -> np.ndarray:
        """MiniRocket features [N, F] float64 of every window of `ws` (labelled or not), modality-major."""
        _same_layout(self.specs, ws, "the window set")
        blocks = []
        for spec in self.specs:
            x = np.asarray(ws.x[spec.name], dtype=np.float32)
            if not np.isfinite(x).all():
                raise ValueError(f"modality {spec.name!r} holds NaN or inf samples; MiniRocket cannot take them")
            if len(x) == 0:
                blocks.append(np.zeros((0, self.n_features[spec.name])))
                continue
            tr = self.transformers[spec.name]  # runs on the n_jobs threads given at fit
            with _thread_limits_kept():
                blocks.append(np.asarray(tr.transform(pad_to_min_length(x)), dtype=np.float64))
        return np.concatenate(blocks, 1)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Ridge scores [N, n_classes_] of features X (from `features`); -inf for classes absent from training."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.mean_):
            raise ValueError(f"features must be [N, {len(self.mean_)}], got {X.shape}")
        z = ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        out = np.full((len(z), self.n_classes_), -np.inf)
        out[:, self.classes_] = z
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """int64 class indices [N] of features X (argmax; ties to the lower class index)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.mean_):
            raise ValueError(f"features must be [N, {len(self.mean_)}], got {X.shape}")
        z = ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        return self.classes_[np.argmax(z, 1)]

    def predict_windows(self, ws: WindowSet) -> np.ndarray:
        """Class indices [N] of every window of `ws`, all modalities present."""
        return self.predict(self.features(ws))


# ----------------------------------------------------------------------------------------- the baseline


def fit_minirocket_baseline(
    train_ws: WindowSet,
    val_ws: WindowSet | None,
    n_kernels: int | Mapping[str, int] = DEFAULT_N_KERNELS,
    seed: int = 0,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    n_jobs: int = 1,
) -> tuple[MiniRocketBaseline, float, float]:
    """Fit MiniRocket per modality on `train_ws` and a balanced ridge on its labelled windows for each alpha.

    n_kernels: aeon's n_kernels per modality (an int for all, or {modality: int}); seed: seeds the transforms;
    n_jobs: numba threads for the transform (aeon's meaning: -1 = all cores). Returns (model with the ridge
    weights of the chosen alpha, chosen alpha, its validation macro-F1); alpha is chosen by macro-F1 on the labelled windows of `val_ws` (ties: the earlier in `alphas`). With
    val_ws None, alphas must hold one value and the returned macro-F1 is nan.
    """
    t0 = time.perf_counter()
    alphas = tuple(float(a) for a in alphas)
    if not alphas:
        raise ValueError("alphas is empty")
    if not all(a > 0 and math.isfinite(a) for a in alphas):
        raise ValueError(f"alphas must be positive finite numbers, got {alphas}")
    if val_ws is None and len(alphas) != 1:
        raise ValueError("choosing among several alphas needs val_ws")
    if val_ws is not None:
        _same_layout(train_ws.specs, val_ws, "val_ws")
    if isinstance(n_kernels, Mapping):
        missing = [s.name for s in train_ws.specs if s.name not in n_kernels]
        extra = sorted(set(n_kernels) - set(train_ws.names))
        if missing or extra:
            raise ValueError(f"n_kernels names modalities {sorted(n_kernels)}; train_ws has {list(train_ws.names)}")
        per_mod = {s.name: int(n_kernels[s.name]) for s in train_ws.specs}
    else:
        per_mod = {s.name: int(n_kernels) for s in train_ws.specs}
    if any(k < 1 for k in per_mod.values()):
        raise ValueError(f"n_kernels must be positive, got {per_mod}")
    keep, y = _labels_of(train_ws)
    if len(y) == 0:
        raise ValueError("train_ws has no labelled windows")
    if val_ws is not None:
        vkeep, yv = _labels_of(val_ws)
        if len(yv) == 0:
            raise ValueError("val_ws has no labelled windows")
    n_classes = len(train_ws.class_names)

    MiniRocket = _minirocket_class()
    transformers = {}
    state = np.random.get_state()  # aeon's fit calls np.random.seed: leave the caller's global state alone
    try:
        for position, spec in enumerate(train_ws.specs):
            x = np.asarray(train_ws.x[spec.name], dtype=np.float32)
            if not np.isfinite(x).all():
                raise ValueError(f"modality {spec.name!r} holds NaN or inf samples; MiniRocket cannot take them")
            tr = MiniRocket(
                n_kernels=per_mod[spec.name], random_state=_modality_seed(seed, position), n_jobs=n_jobs
            )
            with _thread_limits_kept():
                transformers[spec.name] = tr.fit(pad_to_min_length(x))
    finally:
        np.random.set_state(state)
    model = MiniRocketBaseline(train_ws.specs, per_mod, seed, transformers, n_jobs)

    X = model.features(train_ws.subset(keep))
    start = 0
    for spec in train_ws.specs:
        width = model.transformers[spec.name].parameters[-1].shape[0]  # biases: one per feature
        model.n_features[spec.name] = int(width)
        model.columns[spec.name] = np.arange(start, start + width, dtype=np.int64)
        start += width
    if start != X.shape[1]:
        raise RuntimeError(f"MiniRocket gave {X.shape[1]} features, its parameters say {start}")
    ridge = BalancedRidge(X, y, n_classes)
    model.mean_, model.scale_, model.classes_, model.n_classes_ = ridge.mean, ridge.scale, ridge.classes, n_classes
    Xv = model.features(val_ws.subset(vkeep)) if val_ws is not None else None
    best = None
    for alpha in alphas:
        model.coef_, model.intercept_ = ridge.solve(alpha)
        score = float("nan") if Xv is None else macro_f1(yv, model.predict(Xv), n_classes)
        log.debug("MiniRocket ridge alpha=%g: val macro-F1 %.4f", alpha, score)
        if best is None or score > best[2]:
            best = (model.coef_, model.intercept_, score, alpha)
    model.coef_, model.intercept_, val_f1, model.alpha = best
    model.fit_seconds = time.perf_counter() - t0
    return model, model.alpha, val_f1


def minirocket_baseline_scores(
    model: MiniRocketBaseline, ws: WindowSet, subsets: Sequence[Sequence[str]] | None = None
) -> dict[str, float]:
    """Macro-F1 on the labelled windows of `ws` per subset of present modalities, keyed "acc+eda" etc.

    Absent modalities' feature columns are set to the model's training mean (0 after standardisation);
    `subsets` defaults to every non-empty subset, largest first.
    """
    _same_layout(model.specs, ws, "ws")
    keep, y = _labels_of(ws)
    X = model.features(ws.subset(keep))
    return scores_per_subset(X, y, model.names, model.columns, model.mean_, model.predict, model.n_classes_, subsets)
