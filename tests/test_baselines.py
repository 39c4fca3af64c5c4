"""Tests of the window statistics + logistic regression baseline (crossl_edge.baselines)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import crossl_edge.baselines.stats_lr as stats_lr
from crossl_edge.baselines import (
    BASE_STATS,
    EMG_STATS,
    LogisticRegression,
    feature_names,
    fit_stats_baseline,
    modality_columns,
    multinomial_objective,
    stats_baseline_scores,
    window_features,
)
from crossl_edge.data import LIS_HELD_OUT_DAY, WindowSet, leave_group_out
from crossl_edge.metrics import macro_f1
from crossl_edge.spec import ModalitySpec

EMG = ModalitySpec("emg", "emg", 2, 11.0, 11, channel_names=("a", "b"))
ACC = ModalitySpec("acc", "acc", 1, 4.0, 4)


def _windowset(x: dict[str, np.ndarray], y: np.ndarray, specs=(EMG, ACC), n_classes: int = 2) -> WindowSet:
    n = len(y)
    return WindowSet(
        specs=tuple(specs),
        x={k: np.asarray(v, dtype=np.float32) for k, v in x.items()},
        y=np.asarray(y, dtype=np.int64),
        subject=np.array(["s0"] * n),
        group=np.array(["g0"] * n),
        t_start=np.arange(n, dtype=np.float64),
        class_names=tuple(f"c{i}" for i in range(n_classes)),
    )


def _blobs(rng, n_per_class, centres, spread):
    X = np.concatenate([c + spread * rng.normal(size=(n, len(c))) for n, c in zip(n_per_class, centres)])
    y = np.concatenate([np.full(n, k) for k, n in enumerate(n_per_class)])
    return X, y


# ---------------------------------------------------------------------------------------------- features


def test_feature_values_by_hand():
    ramp = np.arange(11.0)
    emg = np.stack([np.stack([ramp, np.full(11, -2.0)]), np.stack([2 * ramp[::-1], np.zeros(11)])])  # [2, 2, 11]
    acc = np.array([[[1.0, -1.0, 1.0, -1.0]], [[3.0, 3.0, 3.0, 3.0]]])  # [2, 1, 4]
    ws = _windowset({"emg": emg, "acc": acc}, np.array([0, 1]))
    X = window_features(ws)
    names = feature_names(ws.specs)
    assert X.shape == (2, 2 * 12 + 1 * 10) and len(names) == X.shape[1]
    assert names[:3] == ["emg.a.mean", "emg.a.std", "emg.a.min"]
    assert names[12] == "emg.b.mean" and names[24] == "acc.ch0.mean" and names[-1] == "acc.ch0.mean_abs_diff"
    f = dict(zip(names, X[0]))
    # ramp 0..10: numpy's linear percentiles sit at 0.1 * 10 etc.
    expected_ramp = {"mean": 5, "std": math.sqrt(10), "min": 0, "max": 10, "p10": 1, "p25": 2.5, "p50": 5,
                     "p75": 7.5, "p90": 9, "mean_abs_diff": 1, "mean_abs": 5, "rms": math.sqrt(35)}
    for stat, value in expected_ramp.items():
        assert f[f"emg.a.{stat}"] == pytest.approx(value), stat
    expected_const = {"mean": -2, "std": 0, "min": -2, "max": -2, "p50": -2, "mean_abs_diff": 0,
                      "mean_abs": 2, "rms": 2}
    for stat, value in expected_const.items():
        assert f[f"emg.b.{stat}"] == pytest.approx(value), stat
    # acc (not emg): no mean_abs / rms; sorted [-1, -1, 1, 1] -> p25 at 0.75 is -1, p50 at 1.5 is 0
    expected_acc = {"mean": 0, "std": 1, "min": -1, "max": 1, "p10": -1, "p25": -1, "p50": 0, "p75": 1, "p90": 1,
                    "mean_abs_diff": 2}
    for stat, value in expected_acc.items():
        assert f[f"acc.ch0.{stat}"] == pytest.approx(value), stat
    assert not any(n.startswith("acc.") and n.endswith(("mean_abs", "rms")) for n in names)
    # second window: reversed ramp times 2 -> location/scale statistics double, order does not matter
    g = dict(zip(names, X[1]))
    for stat, value in expected_ramp.items():
        assert g[f"emg.a.{stat}"] == pytest.approx(2 * value), stat
    assert g["acc.ch0.std"] == 0 and g["acc.ch0.p90"] == 3
    cols = modality_columns(ws.specs)
    assert list(cols["emg"]) == list(range(24)) and list(cols["acc"]) == list(range(24, 34))
    assert len(BASE_STATS) == 10 and len(EMG_STATS) == 2


def test_features_vectorised_match_per_window_and_chunking(monkeypatch):
    rng = np.random.default_rng(0)
    n = 37
    ws = _windowset({"emg": rng.normal(size=(n, 2, 11)), "acc": rng.normal(size=(n, 1, 4))}, rng.integers(0, 2, n))
    X = window_features(ws)
    for i in (0, 17, 36):
        row = []
        for spec in ws.specs:
            for ch in ws.x[spec.name][i].astype(np.float64):
                row += [ch.mean(), ch.std(), ch.min(), ch.max(), *np.percentile(ch, [10, 25, 50, 75, 90]),
                        np.abs(np.diff(ch)).mean()]
                if spec.kind == "emg":
                    row += [np.abs(ch).mean(), np.sqrt(np.mean(ch ** 2))]
        np.testing.assert_allclose(X[i], row, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(stats_lr, "_CHUNK_VALUES", 25)  # a few windows per chunk
    np.testing.assert_array_equal(window_features(ws), X)


# -------------------------------------------------------------------------------------- logistic regression


def test_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    n, F, K = 30, 5, 4
    X = rng.normal(size=(n, F))
    y = rng.integers(0, K, n)
    sw = rng.uniform(0.5, 2.0, n)
    penalty = rng.uniform(0.5, 3.0, F)
    theta = rng.normal(size=(F + 1) * K)
    for pen in (None, penalty):
        f, g = multinomial_objective(theta, X, y, K, sw, 0.7, pen)
        eps = 1e-6
        fd = np.array([
            (multinomial_objective(theta + eps * e, X, y, K, sw, 0.7, pen)[0]
             - multinomial_objective(theta - eps * e, X, y, K, sw, 0.7, pen)[0]) / (2 * eps)
            for e in np.eye(len(theta))
        ])
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    # the value is the scikit-learn objective divided by C * n
    W, b = theta[: F * K].reshape(F, K), theta[F * K:]
    z = X @ W + b
    ce = np.log(np.exp(z).sum(1)) - z[np.arange(n), y]
    f_direct = (0.5 * np.sum(W ** 2) + 0.7 * np.sum(sw * ce)) / (0.7 * n)
    assert multinomial_objective(theta, X, y, K, sw, 0.7)[0] == pytest.approx(f_direct, rel=1e-12)


def test_fit_reaches_the_optimum_of_the_stated_objective():
    """The preconditioned solve must minimise the plain objective: its gradient there is ~0."""
    rng = np.random.default_rng(2)
    base = rng.normal(size=(400, 3))
    X = np.concatenate([base, base @ rng.normal(size=(3, 4)) + 1e-3 * rng.normal(size=(400, 4))], 1)  # collinear
    y = (base[:, 0] + 0.5 * rng.normal(size=400) > 0).astype(np.int64) + (base[:, 1] > 1)
    for C in (0.01, 1.0, 100.0):
        m = LogisticRegression(C=C).fit(X, y)
        assert m.converged_
        Xs = (X - m.mean_) / m.scale_
        sw = (len(y) / (3 * np.bincount(y)))[y]
        _, g = multinomial_objective(np.concatenate([m.coef_.T.ravel(), m.intercept_]), Xs, y, 3, sw, C)
        assert np.abs(g).max() < 1e-4, C


def test_separable_data_is_classified_perfectly():
    rng = np.random.default_rng(3)
    centres = [np.array([0.0, 0.0, 0.0]), np.array([6.0, 0.0, 0.0]), np.array([0.0, 6.0, 0.0]), np.array([0, 0, 6.0])]
    X, y = _blobs(rng, [50, 60, 70, 80], centres, 0.7)
    Xt, yt = _blobs(rng, [50, 50, 50, 50], centres, 0.7)
    m = LogisticRegression(C=10.0).fit(X * 100 + 5, y)  # arbitrary scale/offset: fit standardises
    assert np.mean(m.predict(X * 100 + 5) == y) == 1.0
    assert np.mean(m.predict(Xt * 100 + 5) == yt) >= 0.99
    p = m.predict_proba(Xt * 100 + 5)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_array_equal(p.argmax(1), m.predict(Xt * 100 + 5))
    np.testing.assert_array_equal(m.decision_function(Xt * 100 + 5).argmax(1), m.predict(Xt * 100 + 5))


def test_balanced_class_weight_helps_macro_f1_on_imbalanced_data():
    rng = np.random.default_rng(4)
    centres = [np.array([0.0, 0.0]), np.array([1.5, 0.0]), np.array([0.0, 1.5])]
    X, y = _blobs(rng, [1000, 60, 30], centres, 1.0)
    Xt, yt = _blobs(rng, [500, 500, 500], centres, 1.0)
    balanced = LogisticRegression(C=1.0, class_weight="balanced").fit(X, y)
    plain = LogisticRegression(C=1.0, class_weight=None).fit(X, y)
    f1_bal = macro_f1(yt, balanced.predict(Xt), 3)
    f1_plain = macro_f1(yt, plain.predict(Xt), 3)
    assert f1_bal > f1_plain + 0.1, (f1_bal, f1_plain)


def test_round_trip_through_json_and_determinism():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 6))
    y = rng.integers(0, 3, 300) * 2  # classes 0, 2, 4 of n_classes=6: 1, 3, 5 never seen
    m = LogisticRegression(C=0.3).fit(X, y, n_classes=6)
    m.feature_names_ = [f"f{i}" for i in range(6)]
    again = LogisticRegression(C=0.3).fit(X, y, n_classes=6)
    np.testing.assert_array_equal(m.coef_, again.coef_)
    np.testing.assert_array_equal(m.intercept_, again.intercept_)
    loaded = LogisticRegression.from_dict(json.loads(json.dumps(m.to_dict())))
    Xt = rng.normal(size=(100, 6))
    np.testing.assert_array_equal(loaded.predict(Xt), m.predict(Xt))
    np.testing.assert_array_equal(loaded.predict_proba(Xt), m.predict_proba(Xt))
    np.testing.assert_array_equal(loaded.decision_function(Xt), m.decision_function(Xt))
    assert loaded.feature_names_ == m.feature_names_
    p = m.predict_proba(Xt)
    assert p.shape == (100, 6) and np.all(p[:, [1, 3, 5]] == 0)
    assert np.all(np.isneginf(m.decision_function(Xt)[:, [1, 3, 5]]))
    assert set(m.predict(Xt).tolist()) <= {0, 2, 4}
    with pytest.raises(ValueError):
        LogisticRegression.from_dict({"format": "something else"})


# ------------------------------------------------------------------------------------------- the baseline


def _informative_windowset(rng, n):
    """Class sets the EMG level of channel a; ACC is pure noise."""
    y = rng.integers(0, 3, n)
    emg = rng.normal(size=(n, 2, 11)) + 3.0 * y[:, None, None] * np.array([1.0, 0.0])[None, :, None]
    acc = rng.normal(size=(n, 1, 4))
    return _windowset({"emg": emg, "acc": acc}, y, n_classes=3)


def test_fit_stats_baseline_and_missing_modalities():
    rng = np.random.default_rng(6)
    train, val, test = (_informative_windowset(rng, n) for n in (300, 100, 200))
    train.y[:10] = -1  # unlabelled windows are ignored
    Cs = (0.01, 1.0)
    model, C, val_f1 = fit_stats_baseline(train, val, Cs=Cs)
    assert C in Cs and val_f1 > 0.9
    assert val_f1 == macro_f1(val.y, model.predict(window_features(val)), 3)
    assert model.feature_names_ == feature_names(train.specs)
    scores = stats_baseline_scores(model, test)
    assert list(scores) == ["emg+acc", "emg", "acc"]
    assert scores["emg+acc"] > 0.9 and scores["emg"] > 0.9
    assert scores["acc"] < 0.5  # noise alone (with emg at its training mean) is near chance
    # absent modality = its training mean, i.e. 0 after standardisation
    X = window_features(test)
    X[:, modality_columns(test.specs)["emg"]] = model.mean_[modality_columns(test.specs)["emg"]]
    assert scores["acc"] == macro_f1(test.y, model.predict(X), 3)
    assert stats_baseline_scores(model, test, [("emg",)]) == {"emg": scores["emg"]}
    with pytest.raises(ValueError):
        stats_baseline_scores(model, test, [("gyro",)])


def test_lis_held_out_day_beats_chance(datasets_root):
    """Real data: train on the first two days, test on 2020-07-09 (78 windows, 26 letters; chance ~0.04).

    Measured when written (C=0.1): macro-F1 0.649 with EMG+ACC+GYRO, 0.529 with EMG alone; SOURCE.md's
    prototype reported 0.44 / 0.62.
    """
    from crossl_edge.data import load_windows

    ws = load_windows("lis-emg-imu", datasets_root)
    train_idx, test_idx = leave_group_out(ws.group, LIS_HELD_OUT_DAY)
    assert len(test_idx) == 78
    model, C, _ = fit_stats_baseline(ws.subset(train_idx), None, Cs=(0.1,))
    scores = stats_baseline_scores(model, ws.subset(test_idx), [ws.names, ("emg",)])
    assert scores["+".join(ws.names)] > 0.4
    assert scores["emg"] > 0.15  # EMG with ACC/GYRO at their training mean (model fitted on all three)
    emg = ws.subset(train_idx)
    emg_only = WindowSet(emg.specs[:1], {"emg": emg.x["emg"]}, emg.y, emg.subject, emg.group, emg.t_start,
                         emg.class_names)
    model_emg, _, _ = fit_stats_baseline(emg_only, None, Cs=(0.1,))
    test = ws.subset(test_idx)
    f1_emg = macro_f1(test.y, model_emg.predict(window_features(
        WindowSet(test.specs[:1], {"emg": test.x["emg"]}, test.y, test.subject, test.group, test.t_start,
                  test.class_names))), 26)
    assert f1_emg > 0.25
