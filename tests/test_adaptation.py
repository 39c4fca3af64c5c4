"""Per-user adaptation without labels: a model trained on session-normalised windows, exported, and run by the
torch-free streaming classifier, which learns the wearer's statistics live. The stream must reproduce, window
for window, what training-time `session_normalize` computes offline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crossl_edge.data import NormStats, load_windows
from crossl_edge.data.normalize import RunningChannelStats, session_normalize
from crossl_edge.runtime import EdgeModel
from crossl_edge.runtime.stream import StreamingClassifier

from conftest import TRAIN_ARGS, export_bundle


def test_running_stats_equal_batch_stats_whatever_the_chunks():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(1000, 3))
    floor = np.full(3, 1e-3)
    whole = RunningChannelStats(3)
    whole.update(x)
    pieces = RunningChannelStats(3)
    for chunk in np.array_split(x, [1, 7, 300, 301, 999]):
        pieces.update(chunk)
    for stats in (whole, pieces):
        mean, std = stats.mean_std(floor)
        assert np.allclose(mean, x.mean(0)) and np.allclose(std, x.std(0))
    assert np.array_equal(RunningChannelStats(3).mean_std(floor)[1], floor)  # nothing seen yet: the floor


def test_session_normalize_counts_overlapping_samples_once(datasets_root):
    ws = load_windows("stress-predict", datasets_root, modalities=["temp"])
    sub = ws.subset(np.flatnonzero(ws.subject == ws.subject[0])[:5])  # hop 5 s, window 10 s: they overlap
    norm = NormStats.fit(ws)
    out = session_normalize(sub, np.zeros(5), norm)
    x = sub.x["temp"][:, 0]  # [5, 40]
    stream = np.concatenate([x[0]] + [w[20:] for w in x[1:]])  # every sample once
    for i in range(5):
        seen = stream[: 40 + 20 * i]
        assert np.allclose(out.x["temp"][i, 0], (x[i] - seen.mean()) / max(seen.std(), 0.1 * norm.std["temp"][0]), atol=1e-4)


@pytest.fixture(scope="module")
def session_bundle(datasets_root, tmp_path_factory):
    from crossl_edge import finetune, pretrain

    run = tmp_path_factory.mktemp("adapt") / "run"
    assert pretrain.main(["--run", str(run), "--epochs", "0", "--normalization", "session", *TRAIN_ARGS]) == 0
    assert finetune.main(["--run", str(run), "--mode", "probe", "--label-fraction", "0.1", "--set-default", *TRAIN_ARGS]) == 0
    return run, export_bundle(run, run.parent / "bundle", "--backends", "litert")


def test_streaming_adaptation_reproduces_training_normalisation(session_bundle, datasets_root):
    run, bundle = session_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["session_normalization"] == {"std_floor_fraction": 0.1}
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["normalization"] == "session"

    ws = load_windows("stress-predict", datasets_root)
    subject = manifest["source"]["test_subjects"][0]
    idx = np.flatnonzero(ws.subject == subject)
    contiguous = np.flatnonzero(np.diff(ws.t_start[idx]) != 5.0)
    idx = idx[: (contiguous[0] + 1) if len(contiguous) else len(idx)][:24]  # one unbroken stretch, 2 minutes
    sub = ws.subset(idx)
    norm = NormStats.from_dict(info["normalization"])
    offline = session_normalize(sub, np.zeros(len(idx)), norm)

    model = EdgeModel(bundle, "litert")
    stream = StreamingClassifier(EdgeModel(bundle, "litert"))
    assert stream.adapt
    for s in sub.specs:
        model.set_normalization(s.name, np.zeros(s.channels), np.ones(s.channels))
    t0 = float(sub.t_start[0])
    preds = []
    for i in range(len(idx)):  # the first window whole, then each window's new 5 s, one push per hop
        for s in sub.specs:
            w = sub.x[s.name][i]
            new = w if i == 0 else w[:, s.window // 2:]
            stream.push(s.name, new.T, t0 if i == 0 else t0 + 5.0 * i + 5.0)
        preds += stream.poll(t0 + 10.0 + 5.0 * i)
    assert len(preds) == len(idx) and all(p.state == "ok" for p in preds)
    for i, p in enumerate(preds):
        ref = model.predict({s.name: offline.x[s.name][i] for s in sub.specs})
        assert np.allclose(p.probs, ref.probs, atol=1e-4), i
    # without adaptation the same windows give other outputs: the running statistics are what the model sees
    plain = EdgeModel(bundle, "litert")
    moved = [np.abs(plain.predict({s.name: sub.x[s.name][i] for s in sub.specs}).probs - preds[i].probs).max()
             for i in range(len(idx))]
    assert max(moved) > 1e-3



def test_personalising_an_adapted_bundle_from_stored_windows_is_refused(session_bundle):
    from crossl_edge.personalize.collect import PersonalizeError, from_recording

    with pytest.raises(PersonalizeError, match="per-user adaptation"):
        from_recording(EdgeModel(session_bundle[1], "litert"), "replay:stress-predict:S04", per_class=3, quiet=True)


def test_embedding_with_each_windows_session_statistics_equals_the_offline_normalisation(session_bundle, datasets_root):
    """What the personalisation benchmark does on an adapted bundle: each window standardised in the runtime with
    its session's running statistics (session_running_stats), the same as training-time session_normalize."""
    from crossl_edge.data.normalize import session_running_stats
    from crossl_edge.personalize.embed import embed_windows

    run, bundle = session_bundle
    info = json.loads((run / "run.json").read_text())
    ws = load_windows("stress-predict", datasets_root)
    idx = np.flatnonzero(ws.subject == ws.subject[-1])[:12]
    sub = ws.subset(idx)
    norm = NormStats.from_dict(info["normalization"])
    stats = session_running_stats(sub, np.zeros(len(idx)), norm)
    offline = session_normalize(sub, np.zeros(len(idx)), norm)
    g, base = embed_windows(EdgeModel(bundle, "litert"), sub.x, normalization=stats)
    identity = EdgeModel(bundle, "litert")
    for s in sub.specs:
        identity.set_normalization(s.name, np.zeros(s.channels), np.ones(s.channels))
    g_ref, base_ref = embed_windows(identity, offline.x)
    assert np.allclose(g, g_ref, atol=1e-4) and np.allclose(base, base_ref, atol=1e-4)
    g_plain, _ = embed_windows(EdgeModel(bundle, "litert"), sub.x)
    assert np.abs(g_plain - g).max() > 1e-3  # the statistics were applied
