"""The mechanisms behind the learning results (issue 13): encoder front end and strides, the statistics path,
fixed-size batches, the logistic-regression probe, time-separated validation and the bootstrap intervals.
Tests prove the mechanisms, not the benchmark's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import accuracy_stats as bs
from crossl_edge.data import load_windows
from crossl_edge.metrics import macro_f1
from crossl_edge.models import CroSSLNet
from crossl_edge.models.crossl import ModelConfig
from crossl_edge.models.encoder import (
    MIN_WINDOW_FLOOR, EncoderConfig, ModalityEncoder, channel_stats, envelope_factor, stem_stride, window_moments,
)
from crossl_edge.spec import ModalitySpec
from crossl_edge.training.batches import fixed_size_batches
from crossl_edge.training.device import place
from crossl_edge.training.protocol import split_windows
from crossl_edge.training.supervised import FinetuneConfig, global_embeddings, predict_logits, train_classifier

EMG = ModalitySpec("emg", "emg", 8, 200, 400)


@pytest.mark.parametrize("rate,kind,length,expected", [
    (200, "acc", 400, 4),  # LIS IMU (about 50 Hz of motion held at 200 Hz)
    (50, "emg", 100, 2),  # the 50 Hz envelope keeps its 10 Hz band
    (32, "acc", 320, 2),  # 32 Hz ACC: a Nyquist of 8 Hz keeps the 8 Hz band; a stride of 4 would not
    (25, "acc", 250, 1),
    (64, "bvp", 640, 4),
    (4, "eda", 40, 2),
    (1000, "emg", 2000, 4),  # capped by max_stem_stride
    (200, "other", 400, 1),  # an unknown band keeps everything
    (200, "acc", 20, 2),  # a short window keeps min_length samples for the blocks
])
def test_stem_stride_follows_rate_and_band_not_window(rate, kind, length, expected):
    assert stem_stride(rate, kind, length, EncoderConfig()) == expected


def test_emg_front_end_is_the_rectified_mean_and_discards_the_carrier():
    assert envelope_factor(EMG) == 4 and envelope_factor(ModalitySpec("emg", "emg", 1, 1000, 2000)) == 20
    assert envelope_factor(ModalitySpec("acc", "acc", 3, 200, 400)) == 1
    enc = ModalityEncoder(EMG, EncoderConfig()).eval()
    x = torch.randn(2, 8, 400)
    expected = x.abs().reshape(2, 8, 100, 4).mean(-1)
    assert torch.allclose(enc.front(x), expected, atol=1e-6)
    # a sign flip of the carrier (same envelope) gives the same embedding: only the envelope reaches the convs
    assert torch.allclose(enc(x), enc(-x), atol=1e-5)
    assert not list(enc.front.parameters())  # a fixed average, not learnt


def test_statistics_path_sees_level_and_spread():
    x = torch.tensor([[[1.0, 3.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0]]])
    s = channel_stats(x)
    assert torch.allclose(s, torch.tensor([[2.0, 0.0, 1.0, 0.0]]), atol=1e-3)
    enc = ModalityEncoder(ModalitySpec("acc", "acc", 2, 4, 4), EncoderConfig(min_length=1)).eval()
    assert enc.stats is not None
    assert ModalityEncoder(ModalitySpec("acc", "acc", 2, 4, 4), EncoderConfig(stats_path=False, input_norm="none")).stats is None
    with pytest.raises(ValueError, match="statistics path"):
        EncoderConfig(stats_path=False)  # standardised windows without the path would lose level and spread


def test_window_input_norm_gives_the_convs_shape_and_the_statistics_path_level_and_spread():
    spec = ModalitySpec("eda", "eda", 1, 4, 40)
    torch.manual_seed(0)
    enc = ModalityEncoder(spec, EncoderConfig(window_std_floor=0.1)).eval()  # unfitted: 0.1 normalised units
    x = torch.randn(3, 1, 40)
    stats_out = enc.stats(channel_stats(x))
    # the conv path is blind to an offset and to a gain (above the floor): only the statistics path moves
    shifted = x * 3.0 + 5.0
    conv = enc(x) - stats_out
    assert torch.allclose(enc(shifted) - enc.stats(channel_stats(shifted)), conv, atol=1e-4)
    assert not torch.allclose(enc(shifted), enc(x), atol=1e-2)
    # a flat window is not blown up: its conv input stays within the floor's scale
    flat = torch.full((1, 1, 40), 2.0) + 1e-3 * torch.randn(1, 1, 40)
    _, centred, var = window_moments(flat)
    assert float((centred / torch.sqrt(var + enc.window_floor_sq)).abs().max()) < 0.1
    old = ModelConfig.from_dict({"encoder": {"embed_dim": 64}})  # a checkpoint from before the option
    assert old.encoder.input_norm == "none" and ModelConfig().encoder.input_norm == "window"


def test_relative_window_floor_follows_each_channels_own_spread_and_old_weights_keep_the_absolute_one():
    spec = ModalitySpec("eda", "eda", 2, 4, 40)
    torch.manual_seed(0)
    # channel 0 varies by about 0.005 within a window (as Stress-Predict's EDA does), channel 1 by about 1
    train = torch.randn(500, 2, 40) * torch.tensor([0.005, 1.0])[None, :, None] + torch.randn(500, 2, 1)
    enc = ModalityEncoder(spec, EncoderConfig()).eval()
    assert torch.allclose(enc.window_floor_sq, torch.full((1, 2, 1, 1), 0.25))  # unfitted: the floor in normalised units
    enc.fit_window_floor(train)
    floor = enc.window_floor_sq.sqrt().flatten()  # half of each channel's median window std
    assert 0.0022 < float(floor[0]) < 0.0028 and 0.45 < float(floor[1]) < 0.55, floor
    # a typical window of the quiet channel now reaches the convs near unit spread, not squashed under the floor
    _, centred, var = window_moments(train[:1])
    assert float((centred / torch.sqrt(var + enc.window_floor_sq)).std(dim=-1)[0, 0]) > 0.8
    # a channel flat in most windows gets the smallest floor, not zero (no 0/0)
    flat = ModalityEncoder(ModalitySpec("t", "temp", 1, 4, 40), EncoderConfig()).eval()
    flat.fit_window_floor(torch.zeros(10, 1, 40))
    assert float(flat.window_floor_sq.sqrt()) == pytest.approx(MIN_WINDOW_FLOOR) and torch.isfinite(flat(torch.zeros(1, 1, 40))).all()
    # the floor travels with the weights ...
    again = ModalityEncoder(spec, EncoderConfig())
    again.load_state_dict(enc.state_dict())
    assert torch.equal(again.window_floor_sq, enc.window_floor_sq)
    # ... and weights saved before it was a buffer load with the absolute floor they were trained with
    state = {k: v for k, v in enc.state_dict().items() if k != "window_floor_sq"}
    legacy_cfg = ModelConfig.from_dict({"encoder": {"embed_dim": 64, "input_norm": "window"}}).encoder
    assert legacy_cfg.window_floor == "absolute" and ModelConfig().encoder.window_floor == "relative"
    legacy = ModalityEncoder(spec, legacy_cfg)
    legacy.fit_window_floor(train)  # a no-op for "absolute"
    legacy.load_state_dict(state)
    assert torch.allclose(legacy.window_floor_sq, torch.full((1, 2, 1, 1), 0.01))
    with pytest.raises(ValueError, match="window_floor"):
        EncoderConfig(window_floor="per-window")


@pytest.mark.parametrize("n,batch", [(130, 64), (26, 64), (64, 64), (7, 3)])
def test_fixed_size_batches_are_full_distinct_and_fair(n, batch):
    gen = fixed_size_batches(n, batch, seed=1)
    batches = [next(gen) for _ in range(60)]
    size = min(n, batch)
    assert all(len(b) == size and len(set(b.tolist())) == size for b in batches)
    counts = np.bincount(np.concatenate(batches), minlength=n)
    assert counts.max() - counts.min() <= 2  # every window seen about equally often
    with pytest.raises(ValueError):
        next(fixed_size_batches(0, 4))


@pytest.fixture(scope="module")
def lis_raw(datasets_root):
    return load_windows("lis-emg-imu", datasets_root)


def test_group_validation_is_time_separated_and_never_overlaps_training(lis_raw):
    parts = split_windows(lis_raw, "group:2020-07-09", 0)
    rec = lis_raw.recording_ids()
    assert len(np.unique(rec)) == len(lis_raw)  # one window per gesture file
    for c in range(26):
        for g in np.unique(lis_raw.group[parts.val]):
            block = np.flatnonzero((lis_raw.y == c) & (lis_raw.group == g) & (lis_raw.group != "2020-07-09"))
            val = np.intersect1d(block, parts.val)
            if len(val):  # the validation gestures are the last ones of the letter's block on that day
                assert np.array_equal(val, block[-len(val):])
    assert not set(parts.train) & set(parts.val)


def test_overlapping_windows_next_to_validation_are_dropped(datasets_root):
    ws = load_windows("stress-predict", datasets_root, modalities=["temp"], hop_s=2.5)  # windows overlap
    ws.group[:] = np.where(np.isin(ws.subject, np.unique(ws.subject)[:3]), "held", "rest")
    parts = split_windows(ws, "group:held", 0)
    length = ws.specs[0].window_seconds
    rec = ws.recording_ids()
    shared = 0
    for r in np.unique(rec[parts.val]):
        v = ws.t_start[parts.val[rec[parts.val] == r]]
        t = ws.t_start[parts.train[rec[parts.train] == r]]
        if len(t):
            shared += 1
            assert np.abs(t[:, None] - v[None, :]).min() >= length - 1e-9
    assert shared  # recordings with windows on both sides exist, and their neighbours were dropped
    rest = np.flatnonzero(ws.group != "held")
    assert len(parts.train) + len(parts.val) < len(rest)


def test_probe_is_a_converged_logistic_regression_folded_into_the_head(lis_raw):
    from crossl_edge.baselines import LogisticRegression
    from crossl_edge.training.runs import DataChoice, label_budget, prepare

    prep = prepare(DataChoice(dataset="lis-emg-imu", protocol="group:2020-07-09"), raw=lis_raw)
    torch.manual_seed(0)
    net = CroSSLNet(prep.ws.specs, 26)
    idx = label_budget(prep, None, 3, 0)
    val = prep.labelled(prep.val)
    fit = train_classifier(net, prep.tensors(idx), prep.ws.y[idx], prep.tensors(val), prep.ws.y[val],
                           FinetuneConfig(mode="probe"), place("cpu"), progress=False)
    # the head reproduces the logistic regression fitted at the chosen C on standardised embeddings
    g_tr = global_embeddings(net, prep.tensors(idx)).double().numpy()
    g_val = global_embeddings(net, prep.tensors(val)).double().numpy()
    lr = LogisticRegression(C=fit.probe_c).fit(g_tr, prep.ws.y[idx], 26)
    head = predict_logits(net, prep.tensors(val)).double().numpy()
    assert np.allclose(head, lr.decision_function(g_val), atol=1e-3)
    assert fit.best_val_f1 == pytest.approx(macro_f1(prep.ws.y[val], head.argmax(1), 26))


def test_bootstrap_resamples_units_and_shares_draws_between_repeats():
    units = np.repeat(np.arange(10), 5).astype(str)  # 10 subjects of 5 windows
    w = bs.draw_weights([units, units.copy(), np.arange(50).astype(str)], n_draws=200, seed=3)
    assert np.array_equal(w[0], w[1])  # repeats on one test set are one piece of evidence
    assert np.all(w[0].sum(1) == 50) and np.all(w[2].sum(1) == 50)
    assert np.all(w[0].reshape(200, 10, 5).std(-1) == 0)  # a subject's windows come and go together
    y = np.tile([0, 1], 25)
    perfect = bs.bootstrap_means([y], [y], [w[2]], 2)
    assert np.allclose(perfect, 1.0)
    pred = np.where(np.arange(50) < 10, 1 - y, y)
    noisy = bs.bootstrap_means([y], [pred], [w[2]], 2)
    estimate = macro_f1(y, pred, 2)
    low, high = bs.interval(estimate, noisy)
    assert low < estimate < high < 1.0 and high - estimate == pytest.approx(estimate - low)
    assert 0.03 < noisy.std() < 0.15  # 50 windows: the test sample alone moves macro-F1 by several points
