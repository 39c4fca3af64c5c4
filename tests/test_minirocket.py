"""Tests of the MiniRocket reference baseline (crossl_edge.baselines.minirocket; needs the `minirocket` extra).

Real data: the LIS EMG-IMU held-out-day protocol (598 training, 104 validation, 78 test windows; EMG 8x400,
ACC and GYRO 3x400 at 200 Hz) with 168 kernels per modality, so that the whole file, numba's first compile
included, stays well under half a minute on 2 cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossl_edge.baselines import minirocket as mr
from crossl_edge.data import LIS_HELD_OUT_DAY, WindowSet
from crossl_edge.metrics import macro_f1
from crossl_edge.spec import ModalitySpec

pytest.importorskip("aeon", reason="the `minirocket` extra (aeon) is not installed")

KERNELS = 168  # 2 x 84: aeon keeps exactly this many features per modality


@pytest.fixture(scope="module")
def lis(datasets_root):
    """(train, val, test) WindowSets of the LIS held-out-day protocol, raw (not normalised)."""
    from crossl_edge.data import load_windows
    from crossl_edge.training.protocol import split_windows

    ws = load_windows("lis-emg-imu", datasets_root)
    parts = split_windows(ws, f"group:{LIS_HELD_OUT_DAY}")
    train = parts.train[ws.y[parts.train] >= 0]
    return ws.subset(train), ws.subset(parts.val), ws.subset(parts.test)


@pytest.fixture(scope="module")
def fitted(lis):
    train, val, _ = lis
    return mr.fit_minirocket_baseline(train, val, n_kernels=KERNELS, seed=0)


def _windowset(x, y, specs, n_classes=2):
    n = len(y)
    return WindowSet(
        specs=tuple(specs), x={k: np.asarray(v, dtype=np.float32) for k, v in x.items()},
        y=np.asarray(y, dtype=np.int64), subject=np.array(["s0"] * n), group=np.array(["g0"] * n),
        t_start=np.arange(n, dtype=np.float64), class_names=tuple(f"c{i}" for i in range(n_classes)),
    )


def test_shapes_columns_and_determinism(lis, fitted):
    train, val, test = lis
    model, alpha, val_f1 = fitted
    assert alpha in mr.DEFAULT_ALPHAS and 0.0 <= val_f1 <= 1.0
    assert model.names == ("emg", "acc", "gyro")
    assert model.n_features == {"emg": KERNELS, "acc": KERNELS, "gyro": KERNELS}
    assert np.array_equal(np.concatenate([model.columns[n] for n in model.names]), np.arange(3 * KERNELS))
    X = model.features(test)
    assert X.shape == (len(test), 3 * KERNELS) and X.dtype == np.float64
    assert ((X >= 0) & (X <= 1)).all()  # MiniRocket's features are proportions of positive values
    assert model.coef_.shape == (26, 3 * KERNELS) and model.predict(X).shape == (len(test),)

    state = np.random.get_state()
    again, alpha2, val2 = mr.fit_minirocket_baseline(train, val, n_kernels=KERNELS, seed=0)
    assert np.array_equal(np.random.get_state()[1], state[1])  # aeon's np.random.seed was undone
    assert (alpha2, val2) == (alpha, val_f1)
    assert np.array_equal(again.features(test), X)
    assert np.array_equal(again.coef_, model.coef_) and np.array_equal(again.intercept_, model.intercept_)
    other, _, _ = mr.fit_minirocket_baseline(train, val, n_kernels=KERNELS, seed=1)
    assert not np.array_equal(other.features(test), X)


def test_alpha_is_chosen_on_validation_only(lis, fitted):
    train, val, test = lis
    model = fitted[0]
    grid = (1000.0, 10.0, 0.1)
    chosen, alpha, val_f1 = mr.fit_minirocket_baseline(train, val, n_kernels=KERNELS, seed=0, alphas=grid)
    # each alpha alone (no validation): the chosen one is the first best on validation, with the same weights
    Xv = model.features(val)
    per_alpha = []
    for a in grid:
        single, got, nan = mr.fit_minirocket_baseline(train, None, n_kernels=KERNELS, seed=0, alphas=(a,))
        assert got == a and np.isnan(nan)
        per_alpha.append((macro_f1(val.y, single.predict(Xv), 26), single))
    best = int(np.argmax([f for f, _ in per_alpha]))
    assert alpha == grid[best] and val_f1 == per_alpha[best][0]
    assert np.array_equal(per_alpha[best][1].coef_, chosen.coef_)
    # test labels reach nothing but the score: fitting never sees them, and scrambling them moves only the score
    scores = mr.minirocket_baseline_scores(chosen, test, [model.names])
    scrambled = test.subset(np.arange(len(test)))
    scrambled.y = np.random.default_rng(0).permutation(test.y)
    coef = chosen.coef_.copy()
    assert mr.minirocket_baseline_scores(chosen, scrambled, [model.names]) != scores
    assert np.array_equal(chosen.coef_, coef)


def test_beats_chance_on_held_out_day(lis, fitted):
    """26 letters, chance about 0.04. Measured when written: 0.60 with all three sensors (168 kernels each)."""
    _, _, test = lis
    model, _, _ = fitted
    scores = mr.minirocket_baseline_scores(model, test)
    assert len(scores) == 7 and list(scores)[0] == "emg+acc+gyro"
    assert scores["emg+acc+gyro"] > 0.4
    assert all(v > 0.08 for v in scores.values())


def test_absent_modality_columns_sit_at_the_training_mean(lis, fitted):
    _, _, test = lis
    model, _, _ = fitted
    X = model.features(test)
    Xa = X.copy()
    for name in ("acc", "gyro"):
        Xa[:, model.columns[name]] = model.mean_[model.columns[name]]
    # those columns add nothing: the scores are the EMG columns' alone, plus the intercepts
    emg = model.columns["emg"]
    z = ((X[:, emg] - model.mean_[emg]) / model.scale_[emg]) @ model.coef_[:, emg].T + model.intercept_
    assert np.allclose(model.decision_function(Xa), z)
    scores = mr.minirocket_baseline_scores(model, test, [("emg",), model.names])
    assert scores["emg"] == macro_f1(test.y, model.predict(Xa), 26)
    assert scores["emg+acc+gyro"] == macro_f1(test.y, model.predict(X), 26)


def test_bad_input_is_a_clear_error(lis, fitted):
    train, val, test = lis
    model, _, _ = fitted
    emg_only = WindowSet(val.specs[:1], {"emg": val.x["emg"]}, val.y, val.subject, val.group, val.t_start,
                         val.class_names)
    with pytest.raises(ValueError, match="modalities"):
        mr.fit_minirocket_baseline(train, emg_only, n_kernels=KERNELS)
    with pytest.raises(ValueError, match="fitted on"):
        mr.minirocket_baseline_scores(model, emg_only)
    with pytest.raises(ValueError, match="bad subset"):
        mr.minirocket_baseline_scores(model, test, [("bvp",)])
    with pytest.raises(ValueError, match="n_kernels names"):
        mr.fit_minirocket_baseline(train, val, n_kernels={"emg": 84})
    with pytest.raises(ValueError, match="needs val_ws"):
        mr.fit_minirocket_baseline(train, None, n_kernels=KERNELS)
    nan = test.subset(np.arange(len(test)))
    nan.x = dict(nan.x, acc=nan.x["acc"].copy())
    nan.x["acc"][0, 0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.features(nan)
    unlabelled = train.subset(np.arange(len(train)))
    unlabelled.y = np.full(len(train), -1)
    with pytest.raises(ValueError, match="no labelled"):
        mr.fit_minirocket_baseline(unlabelled, val, n_kernels=KERNELS)


def test_windows_shorter_than_nine_samples_are_edge_padded():
    x = np.arange(10, dtype=np.float32).reshape(2, 1, 5)
    padded = mr.pad_to_min_length(x)
    assert padded.shape == (2, 1, 9)
    assert padded[0, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 4, 4]
    assert mr.pad_to_min_length(np.zeros((1, 2, 9), np.float32)).shape == (1, 2, 9)
    rng = np.random.default_rng(0)
    specs = (ModalitySpec("fast", "acc", 2, 8.0, 16), ModalitySpec("slow", "eda", 1, 1.0, 2))
    y = np.repeat([0, 1], 20)
    x = {"fast": rng.normal(size=(40, 2, 16)), "slow": rng.normal(size=(40, 1, 2)) + y[:, None, None] * 3.0}
    ws = _windowset(x, y, specs)
    model, _, val_f1 = mr.fit_minirocket_baseline(ws, ws, n_kernels=84, seed=0)
    assert model.n_features == {"fast": 84, "slow": 84}
    assert val_f1 > 0.9  # the 2-sample modality carries the label, and survives padding


def test_ridge_solves_the_weighted_problem_in_either_form():
    """The dual (n < F) and primal (F <= n) solutions equal the direct weighted least squares one."""
    rng = np.random.default_rng(0)
    for n, F in ((30, 50), (80, 6)):
        X = rng.normal(size=(n, F))
        y = np.concatenate([np.zeros(n // 4, int), np.ones(n - n // 4 - 3, int), np.full(3, 2)])
        ridge = mr.BalancedRidge(X, y, 3)
        assert ridge._primal == (F <= n)
        coef, intercept = ridge.solve(0.5)
        Xs = (X - X.mean(0)) / X.std(0)
        s = (n / (3 * np.bincount(y)))[y]
        T = np.where(np.arange(3) == y[:, None], 1.0, -1.0)
        A = np.hstack([Xs, np.ones((n, 1))]) * np.sqrt(s)[:, None]
        P = np.diag(np.r_[np.full(F, 0.5 * n), 0.0])  # intercept unpenalised
        theta = np.linalg.solve(A.T @ A + P, A.T @ (T * np.sqrt(s)[:, None]))
        assert np.allclose(coef, theta[:F].T) and np.allclose(intercept, theta[F])


def test_import_needs_no_aeon_and_the_runtime_never_imports_it(monkeypatch, lis):
    train, val, _ = lis
    monkeypatch.setitem(sys.modules, "aeon", None)
    monkeypatch.setitem(sys.modules, "aeon.transformations.collection.convolution_based", None)
    with pytest.raises(ImportError, match=r"pip install '\.\[minirocket\]'"):
        mr.fit_minirocket_baseline(train, val, n_kernels=KERNELS)
    code = (
        "import sys\n"
        "import crossl_edge.runtime\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'aeon' or m == 'crossl_edge.baselines.minirocket']\n"
        "assert not loaded, loaded\n"
        "sys.modules['aeon'] = None\n"
        "import crossl_edge.baselines.minirocket\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
