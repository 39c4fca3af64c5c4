"""The streaming classifier: its ring buffers, and predictions (and their times) that do not depend on how the
samples were cut into pushes, checked as a property against `EdgeModel.predict` on the same windows."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossl_edge.data.normalize import RunningChannelStats, session_std_floor
from crossl_edge.runtime import EdgeModel
from crossl_edge.runtime.stream import OK, StreamingClassifier, _Channel
from crossl_edge.spec import ModalitySpec

SESSION_FLOOR = 0.1  # what export writes for a model trained with --normalization session


def test_ring_keeps_a_push_longer_than_itself_at_the_right_positions():
    """One push holding more samples than the ring must leave sample j at j % capacity, wherever the ring was."""
    spec = ModalitySpec("acc", "acc", 1, 32, 320)
    for before in (0, 1, 100, 449):
        ch = _Channel(spec, 450)
        ch.reset(0.0)
        ramp = np.arange(before + 960, dtype=np.float32)[:, None]
        if before:
            ch.append(ramp[:before])
        ch.append(ramp[before:])  # 960 samples into a ring of 450
        window = ch.window(ch.count, np.zeros((1, 320), dtype=np.float32))
        assert np.array_equal(window[0], np.arange(ch.count - 320, ch.count, dtype=np.float32))


def test_a_grown_ring_keeps_every_sample_it_held():
    spec = ModalitySpec("acc", "acc", 1, 32, 320)
    for before in (0, 1, 449, 450, 1000):
        ch = _Channel(spec, 450)
        ch.reset(0.0)
        ch.append(np.arange(before, dtype=np.float32)[:, None])
        ch.grow(1000)
        ch.append(np.arange(before, before + 700, dtype=np.float32)[:, None])
        assert np.array_equal(ch.samples(ch.oldest, ch.count)[:, 0], np.arange(ch.oldest, ch.count, dtype=np.float32))
        with pytest.raises(IndexError, match="not all held"):
            ch.samples(ch.oldest - 1, ch.count) if ch.oldest else ch.samples(0, ch.count + 1)


# ---- push schedules ---------------------------------------------------------------------------------------------
def index_before(t: float, t0: float, rate: float) -> int:
    """How many samples of a stream whose sample 0 is at t0 lie before time t (the window ending at t ends there)."""
    return max(0, int(math.floor((t - t0) * rate + 1e-6)))


@pytest.fixture(scope="module")
def models(fp32_bundle):
    """Models for the stream and for the reference, plain and with per-user adaptation (a flag of the manifest that
    changes only what the runtime does, so any bundle serves); kept apart because adaptation rewrites a model's
    input normalisation."""
    out = {}
    for adapt in (False, True):
        pair = (EdgeModel(fp32_bundle, "litert"), EdgeModel(fp32_bundle, "litert"))
        if adapt:
            for m in pair:
                m.manifest = dataclasses.replace(m.manifest, session_std_floor=SESSION_FLOOR)
        out[adapt] = pair
    return out


def signals(manifest, seconds: float, seed: int) -> dict[str, np.ndarray]:
    """[n, C] per modality at its native rate: noise in the training statistics on a slow drift (so the running
    statistics of per-user adaptation keep moving)."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in manifest.specs:
        n = index_before(seconds, 0.0, s.sample_rate) + 1
        mean = np.asarray(manifest.norm_mean[s.name], dtype=np.float32)
        std = np.maximum(np.asarray(manifest.norm_std[s.name], dtype=np.float32), 1e-3)
        drift = np.linspace(0.0, rng.normal(0.0, 2.0), n, dtype=np.float32)[:, None]
        out[s.name] = (mean + std * (drift + rng.standard_normal((n, s.channels)).astype(np.float32))).astype(np.float32)
    return out


def reference(model: EdgeModel, manifest, data, t0: float, ticks: list[float], adapt: bool):
    """EdgeModel.predict on the window of every modality ending at each tick; with adaptation, each window
    standardised with the statistics of every sample of its stream up to the window's end."""
    stats = {s.name: RunningChannelStats(s.channels) for s in manifest.specs}
    folded = {s.name: 0 for s in manifest.specs}
    out = []
    for t in ticks:
        windows = {}
        for s in manifest.specs:
            end = index_before(t, t0, s.sample_rate)
            windows[s.name] = np.ascontiguousarray(data[s.name][end - s.window : end].T)
            if adapt:
                stats[s.name].update(data[s.name][folded[s.name] : end])
                folded[s.name] = end
                floor = session_std_floor(manifest.norm_std[s.name], SESSION_FLOOR)
                model.set_normalization(s.name, *stats[s.name].mean_std(floor))
        out.append(model.predict(windows))
    return out


#: one push: a single sample of the fastest modality, a fraction of a second, or up to a minute at once
CHUNK_S = st.one_of(st.just(1 / 64), st.floats(0.001, 1.0), st.floats(1.0, 60.0))


@st.composite
def schedules(draw):
    duration = draw(st.floats(11.0, 75.0))
    cuts, t = [], 0.0
    for size, repeat in draw(st.lists(st.tuples(CHUNK_S, st.integers(1, 300)), min_size=1, max_size=8)):
        for _ in range(repeat):
            t += size
            if t >= duration:
                break
            cuts.append(t)
    return {
        "t0": draw(st.integers(0, 10**7)) / 1000.0,  # where the caller's clock stands at the first sample
        "duration": duration,
        "cuts": cuts + [duration],  # every stream is pushed up to each cut, then the classifier is polled
        "hop": draw(st.sampled_from([1.0, 2.5, 5.0, 7.3])),
        "history": draw(st.floats(0.0, 10.0)),  # with the hop, sets the rings' sizes: where windows wrap
        "poll_default": draw(st.booleans()),  # poll() (up to the newest sample) or poll(cut)
        "adapt": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=200, deadline=None)
@given(plan=schedules())
def test_predictions_and_their_times_do_not_depend_on_how_samples_were_pushed(models, plan):
    model, ref_model = models[plan["adapt"]]
    m = model.manifest
    t0, cuts = plan["t0"], plan["cuts"]
    data = signals(m, plan["duration"], plan["seed"])
    stream = StreamingClassifier(model, hop_s=plan["hop"], history_s=plan["history"])
    assert stream.adapt == plan["adapt"]
    got, done = [], {s.name: 0 for s in m.specs}
    for cut in cuts:
        for s in m.specs:
            stop = index_before(t0 + cut, t0, s.sample_rate)
            if stop > done[s.name]:
                stream.push(s.name, data[s.name][done[s.name] : stop], t0 + done[s.name] / s.sample_rate)
                done[s.name] = stop
        got += stream.poll() if plan["poll_default"] and cut != cuts[-1] else stream.poll(t0 + cut)

    ticks, t = [], t0 + m.window_s
    while t <= t0 + cuts[-1] + 1e-9:
        ticks.append(t)
        t += plan["hop"]
    want = reference(ref_model, m, data, t0, ticks, plan["adapt"])
    assert [p.t for p in got] == pytest.approx(ticks, abs=1e-9)
    assert stream.counters.skipped_ticks == 0
    for p, ref, tick in zip(got, want, ticks):
        assert p.state == OK and p.present == m.modality_names, tick
        assert np.array_equal(p.probs, ref.probs) and np.array_equal(p.embedding, ref.embedding), (tick, p.probs, ref.probs)


def test_a_prediction_whose_window_is_gone_is_skipped_and_counted_never_taken_from_another_window(models):
    """Pushes that run further ahead of the polls than max_backlog_s cost the predictions whose windows fell out
    of the rings; the others are still exact."""
    model, ref_model = models[False]
    m = model.manifest
    data = signals(m, 70.0, 1)
    stream = StreamingClassifier(model, hop_s=5.0, max_backlog_s=20.0)
    for s in m.specs:
        stream.push(s.name, data[s.name][: index_before(70.0, 0.0, s.sample_rate)], 0.0)
    got = stream.poll(70.0)
    ticks = [10.0 + 5.0 * k for k in range(13)]  # 10 .. 70 s
    kept = [t for t in ticks if t >= 70.0 - 20.0]  # the rings hold the last window + 20 s
    assert [p.t for p in got] == kept and stream.counters.skipped_ticks == len(ticks) - len(kept)
    for p, ref in zip(got, reference(ref_model, m, data, 0.0, kept, False)):
        assert np.array_equal(p.probs, ref.probs)
