"""On-device personalisation (crossl_edge.personalize) and continued pretraining on recordings, on real data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossl_edge.personalize.cli import main as personalize_main
from crossl_edge.baselines import LogisticRegression, multinomial_objective
from crossl_edge.metrics import macro_f1
from crossl_edge.personalize.bundle import COLLECTED_FILE, Collected
from crossl_edge.personalize.heads import PersonalizeError, check_counts, fit_head
from crossl_edge.personalize.protocol import adaptation_split
from crossl_edge.runtime import BundleError, EdgeModel, load_bundle
from crossl_edge.runtime.bundle import FORMAT, FORMAT_HEAD, MANIFEST, sha256_file, write_manifest

REPO = Path(__file__).resolve().parents[1]
WITHOUT_TORCH = REPO / "tests" / "helpers" / "without_torch.py"
SUBJECT = "S27"  # a held-out test subject of split 0, which the shared run trains on


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def personalised(int8_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("personal") / "me"
    before = _digests(int8_bundle)
    code = personalize_main(["--bundle", str(int8_bundle), "--out", str(out), "--from", f"replay:stress-predict:{SUBJECT}",
                             "--windows", "20", "--C", "1", "--quiet"])
    assert code == 0
    return out, before


def test_personalised_head_beats_the_generic_one_on_the_subject_it_adapted_to(int8_bundle, personalised):
    out, _ = personalised
    collected = Collected.load(out / COLLECTED_FILE)
    assert collected.windows is not None and len(collected.y) == 40 and np.bincount(collected.y).tolist() == [20, 20]
    generic, mine = EdgeModel(int8_bundle, "litert"), EdgeModel(out, "litert")
    n = len(collected.y)
    pred_generic = [generic.predict({k: v[i] for k, v in collected.windows.items()}).probs.argmax() for i in range(n)]
    pred_mine = [mine.predict({k: v[i] for k, v in collected.windows.items()}).probs.argmax() for i in range(n)]
    f_generic, f_mine = macro_f1(collected.y, np.array(pred_generic), 2), macro_f1(collected.y, np.array(pred_mine), 2)
    assert f_mine >= f_generic + 0.1, (f_generic, f_mine)


def test_original_bundle_is_unchanged_and_the_new_one_is_checked(int8_bundle, personalised):
    out, before = personalised
    assert _digests(int8_bundle) == before
    m = json.loads((out / MANIFEST).read_text())
    orig = json.loads((int8_bundle / MANIFEST).read_text())
    assert m["format"] == FORMAT_HEAD and orig["format"] == FORMAT
    for b in ("executorch", "litert"):  # the very same programs
        assert m["backends"][b]["sha256"] == orig["backends"][b]["sha256"] == sha256_file(out / m["backends"][b]["file"])
    assert m["head"]["sha256"] == sha256_file(out / "head.npz")
    p = m["personalization"]
    assert p["head"] == "residual" and p["collected"]["windows_per_class"] == {"rest": 20, "stress": 20}
    assert set(p["parity"]["results"]) == {"litert", "executorch"}
    assert all(r["ok"] and r["max_logit_diff"] <= 1e-4 for r in p["parity"]["results"].values())
    assert p["from"]["manifest_sha256"] == sha256_file(int8_bundle / MANIFEST)
    # the source's content digest, as the runtime checked it, and the personalised manifest sealed in turn
    assert p["from"]["manifest_digest"] == load_bundle(int8_bundle).manifest.digest == orig["integrity"]["sha256"]
    assert p["from"]["signed_by"] is None and load_bundle(out).manifest.digest == m["integrity"]["sha256"]
    assert p["fit_s"] > 0  # recorded; how fast it is, benchmarks/personalize.py measures (2.3 s here on a loaded machine)
    load_bundle(out)  # every file's checksum


def test_tampered_or_mislabelled_personalised_bundles_are_refused(personalised, tmp_path):
    out, _ = personalised
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = bytearray((bad / "head.npz").read_bytes())
    data[-40] ^= 0xFF
    (bad / "head.npz").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="head.npz does not match its manifest checksum"):
        EdgeModel(bad, "litert")
    shutil.copy(out / "head.npz", bad / "head.npz")
    m = json.loads((bad / MANIFEST).read_text())
    m["format"] = FORMAT  # a /1 reader would predict with the generic head and ignore the personal one
    (bad / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"manifest.json was edited after it was written \(field 'format' changed\)"):
        load_bundle(bad)
    write_manifest(bad, m)  # even sealed anew (by a faulty tool), the format must say what the bundle holds
    with pytest.raises(BundleError, match="carries a personalised head"):
        load_bundle(bad)


def test_too_few_windows_are_refused_and_nothing_is_written(fp32_bundle, tmp_path, capsys):
    out = tmp_path / "me"
    # the session's last ~370 s are rest: no stress window is left after 3000 s
    code = personalize_main(["--bundle", str(fp32_bundle), "--out", str(out), "--from", f"replay:stress-predict:{SUBJECT}",
                             "--windows", "5", "--skip", "3000", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "too few labelled windows" in err and "stress has 0" in err and "at least 5" in err
    assert not out.exists() and not out.with_name("me.partial").exists()
    assert personalize_main(["--bundle", str(fp32_bundle), "--out", str(fp32_bundle), "--from",
                             f"replay:stress-predict:{SUBJECT}", "--windows", "1", "--quiet"]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert personalize_main(["--bundle", str(fp32_bundle), "--out", str(out), "--from", f"replay:stress-predict:{SUBJECT}",
                             "--classes", "rest", "--quiet"]) == 2
    assert "at least two classes" in capsys.readouterr().err and not out.exists()


def test_simulated_collection_and_the_personalised_bundle_run_without_torch(fp32_bundle, tmp_path):
    out = tmp_path / "mine"
    proc = subprocess.run(
        [sys.executable, str(WITHOUT_TORCH), "-m", "crossl_edge.personalize", "--bundle", str(fp32_bundle), "--out",
         str(out), "--simulate", "--speed", "20", "--windows", "2", "--yes", "--quiet"],
        capture_output=True, text=True, cwd=REPO, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "residual head on 4 windows (rest 2, stress 2" in proc.stdout
    m = json.loads((out / MANIFEST).read_text())
    assert m["personalization"]["source"] == "simulate" and m["personalization"]["parity"]["results"]["litert"]["ok"]
    proc = subprocess.run(
        [sys.executable, str(WITHOUT_TORCH), "-m", "crossl_edge.run", "--bundle", str(out), "--source",
         "replay:stress-predict:S04", "--duration", "120", "--out", str(tmp_path / "p.jsonl"), "--quiet"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert preds and all(set(p["probs"]) == {"rest", "stress"} for p in preds if p["state"] == "ok")


def test_personalising_a_signed_bundle_records_its_signer_and_signs_with_the_devices_key(
        personalised, fp32_bundle, signing_keys, tmp_path):
    out, _ = personalised
    (_, exporter_pub), (device_key, device_pub) = signing_keys["exporter"], signing_keys["stranger"]
    me = tmp_path / "me"
    assert personalize_main(["--bundle", str(fp32_bundle), "--out", str(me), "--refit", str(out / COLLECTED_FILE),
                             "--sign-key", str(device_key), "--quiet"]) == 0
    m, src = json.loads((me / MANIFEST).read_text()), json.loads((fp32_bundle / MANIFEST).read_text())
    origin = m["personalization"]["from"]
    assert origin["signed_by"] == src["integrity"]["signature"]["public_key"] == exporter_pub.read_text().strip()
    assert origin["manifest_digest"] == src["integrity"]["sha256"]
    load_bundle(me, verify_keys=[device_pub])
    with pytest.raises(BundleError, match=rf"{me / MANIFEST} is signed by key .*which this device does not trust"):
        load_bundle(me, verify_keys=[exporter_pub])  # the exporter never signed what the device made


def test_refit_with_classes_of_ones_own(personalised, tmp_path):
    out, _ = personalised
    c = Collected.load(out / COLLECTED_FILE)
    c.class_names = ("calm", "tense")  # a user's own names: the generic head cannot be corrected, a new one is fitted
    c.save(tmp_path / "mine.npz")
    assert personalize_main(["--bundle", str(out), "--out", str(tmp_path / "b"), "--refit", str(tmp_path / "mine.npz"),
                             "--windows", "20", "--quiet"]) == 0
    m = json.loads((tmp_path / "b" / MANIFEST).read_text())
    assert m["class_names"] == ["calm", "tense"] and m["personalization"]["head"] == "logreg"
    out_b = EdgeModel(tmp_path / "b", "litert").predict({k: v[0] for k, v in c.windows.items()})
    assert out_b.probs.shape == (2,) and out_b.base_logits.shape == (2,)
    assert personalize_main(["--bundle", str(out), "--out", str(tmp_path / "c"), "--refit", str(tmp_path / "mine.npz"),
                             "--head", "residual", "--quiet"]) == 2


# ---- the pieces ---------------------------------------------------------------------------------------------
def test_heads_fit_what_they_should():
    rng = np.random.default_rng(0)
    g = np.concatenate([rng.normal(0, 1, (10, 8)), rng.normal(0, 1, (10, 8)) + 3.0])
    y = np.repeat([0, 1], 10)
    for kind in ("logreg", "prototype"):
        head = fit_head(kind, g, y, 2, C=1.0)
        assert (head(g).argmax(1) == y).all() and not head.residual
    base = np.tile([4.0, 0.0], (20, 1))  # a generic head that always says class 0
    assert (fit_head("residual", g, y, 2, base, C=1e-4)(g, base).argmax(1) == 0).sum() < 20  # the intercept adapts
    assert (fit_head("residual", g, y, 2, base, C=1.0)(g, base).argmax(1) == y).all()
    with pytest.raises(PersonalizeError, match="a residual head needs"):
        fit_head("residual", g, y, 2)
    with pytest.raises(PersonalizeError, match="every class needs windows"):
        fit_head("logreg", g[:10], y[:10], 2)
    with pytest.raises(PersonalizeError, match="b has 1; every class needs at least 3"):
        check_counts(np.array([0, 0, 0, 1]), ("a", "b"), 3)


def test_logistic_regression_offset_gradient_and_effect():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    off, sw = rng.normal(size=(30, 3)), np.ones(30)
    theta = rng.normal(size=15)
    f, grad = multinomial_objective(theta, X, y, 3, sw, 0.5, None, off)
    eps = 1e-6
    num = [(multinomial_objective(theta + eps * e, X, y, 3, sw, 0.5, None, off)[0]
            - multinomial_objective(theta - eps * e, X, y, 3, sw, 0.5, None, off)[0]) / (2 * eps) for e in np.eye(15)]
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-8)
    plain = LogisticRegression(C=0.5).fit(X, y, 3)
    shifted = LogisticRegression(C=0.5).fit(X, y, 3, offset=off)
    assert not np.allclose(plain.coef_, shifted.coef_)
    with pytest.raises(ValueError, match="offset must be finite"):
        LogisticRegression().fit(X, y, 3, offset=off[:5])


def test_adaptation_split_never_overlaps_and_tests_later():
    t = np.arange(60) * 5.0  # 10 s windows every 5 s
    y = np.array([0] * 20 + [1] * 20 + [0] * 20)
    stream = np.zeros(60, dtype=int)
    adapt, test = adaptation_split(t, y, stream, 2, (1, 3), 10.0, "global")
    assert adapt[1].tolist() == [0, 20] and adapt[3].tolist() == [0, 2, 4, 20, 22, 24]
    assert test.min() > 24 and (t[test] >= t[24] + 10.0).all() and set(y[test]) == {0, 1}
    per = adaptation_split(np.zeros(9), np.repeat([0, 1, 2], 3), np.arange(9), 3, (1, 2), 2.0, "per-class")
    assert per[0][2].tolist() == [0, 1, 3, 4, 6, 7] and per[1].tolist() == [2, 5, 8]
    assert adaptation_split(t, y, stream, 2, (25,), 10.0) is None  # too few non-overlapping windows of a class


# ---- continued pretraining on the bridge's recordings --------------------------------------------------------
def test_pretraining_continues_on_recordings(run_dir, tmp_path):
    import torch

    from crossl_edge import pretrain
    from crossl_edge.data import save_byo_dataset, save_byo_recording
    from crossl_edge.data.types import Recording
    from crossl_edge.runtime.replay import load_recordings
    from crossl_edge.training.runs import load_net, read_run

    info = read_run(run_dir)
    (rec,), _ = load_recordings("stress-predict", "S04")
    rec_dir = tmp_path / "recordings"
    for i, (a, b) in enumerate([(0, 200), (400, 640)]):  # two unlabelled stretches, as the bridge's recorder writes
        sig = {s.name: rec.signals[s.name][:, int(a * s.sample_rate):int(b * s.sample_rate)] for s in info.specs}
        save_byo_recording(rec_dir / f"live-{i}.npz", Recording("live", sig, {k: rec.rates[k] for k in sig}))
    save_byo_dataset(rec_dir, info.specs, ())
    new = tmp_path / "mine"
    assert pretrain.main(["--recordings", str(rec_dir), "--run", str(new), "--epochs", "1", "--batch-size", "8",
                          "--quiet", "--threads", "2"]) == 2  # --from-run missing
    assert pretrain.main(["--recordings", str(rec_dir), "--from-run", str(run_dir), "--run", str(new), "--epochs", "2",
                          "--batch-size", "8", "--quiet", "--threads", "2"]) == 0
    d = json.loads((new / "run.json").read_text())
    src = json.loads((run_dir / "run.json").read_text())
    assert d["data"] == src["data"] and d["normalization"] == src["normalization"]
    assert d["continued"]["recording_windows"] == 39 + 47  # 10 s windows every 5 s in 200 s and 240 s and d["continued"]["recording_files"] == 2
    a, b = load_net(run_dir / "backbone.pt", info), load_net(new / "backbone.pt", read_run(new))
    moved = [not torch.equal(p, q) for p, q in zip(a.encoders.parameters(), b.encoders.parameters())]
    assert any(moved)
