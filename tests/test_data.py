"""Tests of the data layer against the real published files (see conftest.py for where they are)."""

from __future__ import annotations

import collections
import csv
import http.server
import json
import logging
import shutil
import string
import sys
import threading
import time
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from crossl_edge.data import (
    ARCHIVES,
    LIS_HELD_OUT_DAY,
    Archive,
    DataError,
    NormStats,
    Recording,
    Split,
    WindowSet,
    check_no_leak,
    fetch_archive,
    find_dataset_root,
    leave_group_out,
    lis_specs,
    load_byo,
    load_lis_emg_imu,
    load_stress_predict,
    load_windows,
    make_windows,
    make_windows_with_report,
    sample_labels,
    save_byo_dataset,
    save_byo_recording,
    stratified_kfold,
    stress_predict_specs,
    stress_predict_subjects,
    subject_splits,
    tree_digest,
)
from crossl_edge.data.lis_emg_imu import parse_timestamp
from crossl_edge.spec import ModalitySpec

STRESS_CLASSES = ("rest", "stress")
LABEL_FILE = "Processed_data/Improved_All_Combined_hr_rsp_binary.csv"


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def stress_root(datasets_root: Path) -> Path:
    return datasets_root / "stress-predict"


@pytest.fixture(scope="session")
def lis_root(datasets_root: Path) -> Path:
    return datasets_root / "lis-emg-imu"


@pytest.fixture(scope="session")
def stress_recs(stress_root: Path) -> list[Recording]:
    return load_stress_predict(stress_root, ["S02", "S03", "S17"])


@pytest.fixture(scope="session")
def lis_recs(lis_root: Path) -> list[Recording]:
    return load_lis_emg_imu(lis_root)


@pytest.fixture(scope="session")
def lis_windows(lis_recs: list[Recording]) -> WindowSet:
    return make_windows(lis_recs, lis_specs(2.0), 2.0, 2.0, tuple(string.ascii_uppercase))


def _label_rows(stress_root: Path, participant: int) -> list[tuple[int, int]]:
    """(unix time, label) rows of one participant, read with the csv module (independent of the loader)."""
    with open(stress_root / LABEL_FILE, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["Participant"]) == participant]
    return [(int(r["Time(sec)"]), int(r["Label"])) for r in rows]


# ------------------------------------------------------------------------------------------ stress-predict


def test_stress_predict_shapes_rates_and_units(stress_recs: list[Recording]) -> None:
    assert [r.subject for r in stress_recs] == ["S02", "S03", "S17"]
    for r in stress_recs:
        assert r.rates == {"acc": 32.0, "bvp": 64.0, "eda": 4.0, "temp": 4.0}
        assert {k: v.shape[0] for k, v in r.signals.items()} == {"acc": 3, "bvp": 1, "eda": 1, "temp": 1}
        assert all(v.dtype == np.float32 for v in r.signals.values())
        lengths = {k: v.shape[1] / r.rates[k] for k, v in r.signals.items()}
        assert max(lengths.values()) - min(lengths.values()) < 5.0  # all about the same span, seconds
        assert 50 * 60 < r.duration() < 62 * 60
        magnitude = np.linalg.norm(r.signals["acc"], axis=0)  # g after the 1/64 conversion
        assert 0.9 < np.median(magnitude) < 1.1
        assert 20 < np.median(r.signals["temp"]) < 40  # deg C
        assert r.labels is not None and r.labels.dtype == np.int64 and r.label_rate == 1.0
        assert set(np.unique(r.labels)) == {-1, 0, 1}
    s02 = stress_recs[0]
    assert s02.signals["acc"].shape == (3, 114054) and s02.signals["bvp"].shape == (1, 228173)
    assert s02.meta["start_unix"] == 1644227574.0 and s02.group == "2022-02-07"


def test_stress_predict_label_track_matches_label_file(stress_root: Path, stress_recs: list[Recording]) -> None:
    s02 = stress_recs[0]
    start = s02.meta["start_unix"]
    rows = _label_rows(stress_root, 2)
    for t, label in rows[::97]:
        assert s02.labels[t - int(start)] == label
    assert (s02.labels[:9] == -1).all() and s02.labels[9] == 0  # the label file starts 9 s in


def test_stress_predict_window_labels_at_known_times(stress_root: Path, stress_recs: list[Recording]) -> None:
    s02 = stress_recs[0]
    ws = make_windows([s02], stress_predict_specs(10.0), 10.0, 5.0, STRESS_CLASSES)
    shapes = {k: v.shape[1:] for k, v in ws.x.items()}
    assert shapes == {"acc": (3, 320), "bvp": (1, 640), "eda": (1, 40), "temp": (1, 40)}
    assert len(ws) == int((s02.duration() - 10.0) // 5.0) + 1
    y = dict(zip(ws.t_start.tolist(), ws.y.tolist()))
    # S02 in the label file: first row at +9 s (rest), stress from +622 s to +997 s (as in tags_S02.csv)
    assert y[0.0] == -1  # 1 of 10 seconds labelled < min_label_fraction
    assert y[5.0] == 0  # 6 of 10 labelled, all rest
    assert y[615.0] == 0 and y[620.0] == 1  # 7 rest + 3 stress -> rest; 2 rest + 8 stress -> stress
    assert y[990.0] == 1 and y[995.0] == 0 and y[1000.0] == 0
    # every window against the label file read independently (majority, >= 50% labelled)
    start = int(s02.meta["start_unix"])
    by_second = {t - start: lab for t, lab in _label_rows(stress_root, 2)}
    for t0, label in list(y.items())[::23]:
        inside = [by_second[s] for s in range(int(t0), int(t0) + 10) if s in by_second]
        expected = -1 if len(inside) < 5 else int(np.bincount(inside, minlength=2).argmax())
        assert label == expected, t0


def test_stress_predict_windows_slice_the_recording(stress_recs: list[Recording]) -> None:
    s03 = stress_recs[1]
    ws = make_windows([s03], stress_predict_specs(10.0), 10.0, 5.0, STRESS_CLASSES)
    for k in (0, 7, len(ws) - 1):
        t = ws.t_start[k]
        for name, rate, width in (("acc", 32, 320), ("bvp", 64, 640), ("eda", 4, 40), ("temp", 4, 40)):
            i = int(round(t * rate))
            np.testing.assert_array_equal(ws.x[name][k], s03.signals[name][:, i : i + width])


def test_stress_predict_subjects_and_s01(stress_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    labelled = stress_predict_subjects(stress_root)
    assert len(labelled) == 34 and "S01" not in labelled and labelled[0] == "S02" and labelled[-1] == "S35"
    assert len(stress_predict_subjects(stress_root, require_labels=False)) == 35
    with caplog.at_level(logging.INFO, logger="crossl_edge.data.stress_predict"):
        recs = load_stress_predict(stress_root, ["S01", "S02"])
    assert [r.subject for r in recs] == ["S02"]
    assert "S01" in caplog.text and "skipped" in caplog.text
    recs = load_stress_predict(stress_root, ["S01"], require_labels=False)
    assert recs[0].subject == "S01" and recs[0].labels is None
    ws = make_windows(recs, stress_predict_specs(10.0), 10.0, 10.0, STRESS_CLASSES)
    assert len(ws) > 300 and (ws.y == -1).all()  # kept for pretraining, unlabelled


def test_stress_predict_parse_cache_is_used(stress_root: Path, stress_recs, caplog: pytest.LogCaptureFixture) -> None:
    t = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="crossl_edge.data.stress_predict"):
        again = load_stress_predict(stress_root, ["S02", "S03", "S17"])
    assert time.perf_counter() - t < 2.0
    assert "3 from the parse cache" in caplog.text
    for a, b in zip(stress_recs, again):
        for k in a.signals:
            np.testing.assert_array_equal(a.signals[k], b.signals[k])
        np.testing.assert_array_equal(a.labels, b.labels)


def test_stress_predict_unknown_subject(stress_root: Path) -> None:
    with pytest.raises(DataError, match="S99"):
        load_stress_predict(stress_root, ["S99"])
    with pytest.raises(DataError, match="subject id"):
        load_stress_predict(stress_root, ["patient2"])


def _copy_subject(stress_root: Path, dest: Path, sid: str = "S02") -> Path:
    root = dest / "stress-predict"
    (root / "Raw_data" / sid).mkdir(parents=True)
    (root / "Processed_data").mkdir()
    for stem in ("ACC", "BVP", "EDA", "TEMP"):
        shutil.copy(stress_root / "Raw_data" / sid / f"{stem}.csv", root / "Raw_data" / sid)
    shutil.copy(stress_root / LABEL_FILE, root / LABEL_FILE)
    return root


def _replace_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[lineno - 1] = text + "\n"
    path.write_text("".join(lines))


def test_corrupt_csv_names_file_and_line(stress_root: Path, tmp_path: Path) -> None:
    root = _copy_subject(stress_root, tmp_path)
    assert len(load_stress_predict(root)) == 1  # fills the parse cache; the corruption must invalidate it
    _replace_line(root / "Raw_data/S02/EDA.csv", 100, "0.5x")
    with pytest.raises(DataError, match=r"EDA\.csv: line 100: non-numeric value '0\.5x'"):
        load_stress_predict(root)
    shutil.copy(stress_root / "Raw_data/S02/EDA.csv", root / "Raw_data/S02/EDA.csv")
    _replace_line(root / "Raw_data/S02/ACC.csv", 50, "1,2")
    with pytest.raises(DataError, match=r"ACC\.csv: line 50: 2 columns where 3 are expected"):
        load_stress_predict(root)
    shutil.copy(stress_root / "Raw_data/S02/ACC.csv", root / "Raw_data/S02/ACC.csv")
    _replace_line(root / "Raw_data/S02/BVP.csv", 2, "32.0")
    with pytest.raises(DataError, match=r"BVP\.csv: sample rate 32 Hz"):
        load_stress_predict(root)
    shutil.copy(stress_root / "Raw_data/S02/BVP.csv", root / "Raw_data/S02/BVP.csv")
    # the label file has empty HR cells (a column the loader does not read): only a bad Time/Label is reported
    _replace_line(root / LABEL_FILE, 5000, "3,88,12.5,16442xx,0")
    with pytest.raises(DataError, match=r"binary\.csv: line 5000: non-numeric value '16442xx'"):
        load_stress_predict(root)


def test_missing_dataset_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="not found at .*CROSSL_EDGE_DATA"):
        find_dataset_root("stress-predict", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="CROSSL_EDGE_DATA"):
        load_stress_predict(tmp_path)
    monkeypatch.setenv("CROSSL_EDGE_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("CROSSL_EDGE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as e:
        find_dataset_root("lis-emg-imu", download=False)
    msg = str(e.value)
    assert "empty" in msg and "downloading is off" in msg
    assert str(tmp_path / "cache" / "datasets" / "lis-emg-imu") in msg


def test_find_dataset_root_order(datasets_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_dataset_root("stress-predict", datasets_root) == datasets_root / "stress-predict"
    assert find_dataset_root("stress-predict", datasets_root / "stress-predict") == datasets_root / "stress-predict"
    assert find_dataset_root("lis-emg-imu") == datasets_root / "lis-emg-imu"  # via CROSSL_EDGE_DATA
    cached = tmp_path / "cache" / "datasets" / "lis-emg-imu" / "Dataset"
    cached.mkdir(parents=True)
    monkeypatch.delenv("CROSSL_EDGE_DATA")
    monkeypatch.setenv("CROSSL_EDGE_CACHE", str(tmp_path / "cache"))
    assert find_dataset_root("lis-emg-imu", download=False) == cached.parent


# ------------------------------------------------------------------------------------------ LIS EMG/IMU


def test_lis_recordings_classes_and_shapes(lis_recs: list[Recording], lis_root: Path) -> None:
    assert len(lis_recs) == 780
    counts = collections.Counter(int(r.labels[0]) for r in lis_recs)
    assert counts == {i: 30 for i in range(26)}
    r = lis_recs[0]
    assert {k: v.shape for k, v in r.signals.items()} == {"emg": (8, 400), "acc": (3, 400), "gyro": (3, 400)}
    assert r.rates == {"emg": 200.0, "acc": 200.0, "gyro": 200.0} and r.duration() == 2.0
    assert r.subject == "signer" and r.meta["letter"] == "A"
    assert (lis_root / "Dataset" / "A" / f"{r.meta['guid']}.json").is_file()
    assert all((rec.labels == rec.labels[0]).all() for rec in lis_recs)
    emg = np.stack([rec.signals["emg"] for rec in lis_recs])
    assert emg.min() >= -128 and emg.max() <= 127 and (emg == np.round(emg)).all()
    acc = np.stack([rec.signals["acc"] for rec in lis_recs])
    assert 0.8 < np.median(np.linalg.norm(acc, axis=1)) < 1.2  # g


def test_lis_days_hold_the_letters_of_source_md(lis_recs: list[Recording]) -> None:
    days: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in lis_recs:
        days[r.group][r.meta["letter"]] += 1
    assert set(days) == {"2020-06-26", "2020-06-27", "2020-07-09"}
    assert days["2020-06-26"] == {c: 27 for c in "ABCDEFGHIJKLMNOPQR"}
    assert days["2020-06-27"] == {c: 27 for c in "STUVWXYZ"}
    assert days["2020-07-09"] == {c: 3 for c in string.ascii_uppercase}
    assert parse_timestamp("26/06/20/22:28:12").isoformat() == "2020-06-26T22:28:12"


def test_lis_orientation_is_opt_in_and_imu_rows_repeat(lis_root: Path, lis_recs: list[Recording]) -> None:
    recs = load_lis_emg_imu(lis_root, include_orientation=True)
    q = np.stack([r.signals["orientation"] for r in recs])  # [780, 4, 400]
    assert q.shape == (780, 4, 400)
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=0.01)  # unit quaternions
    np.testing.assert_array_equal(recs[5].signals["acc"], lis_recs[5].signals["acc"])
    assert [s.name for s in lis_specs(2.0, include_orientation=True)] == ["emg", "acc", "gyro", "orientation"]
    # the documented quirk, kept as published: ~25% of consecutive IMU rows are exact repeats
    acc = np.stack([r.signals["acc"] for r in lis_recs])
    repeats = (np.diff(acc, axis=2) == 0).all(axis=1).mean()
    assert 0.2 < repeats < 0.3


def test_lis_leave_day_out(lis_windows: WindowSet) -> None:
    assert len(lis_windows) == 780 and lis_windows.x["emg"].shape == (780, 8, 400)
    train, test = leave_group_out(lis_windows.group, LIS_HELD_OUT_DAY)
    assert len(test) == 78 and len(train) == 702
    assert np.bincount(lis_windows.y[test], minlength=26).tolist() == [3] * 26
    with pytest.raises(DataError, match="2020-06-26"):
        leave_group_out(lis_windows.group, "2020-01-01")


# ------------------------------------------------------------------------------------------ windowing


def _ramp_recording(subject: str = "r", seconds: float = 30.0, labels=None, label_rate: float = 1.0) -> Recording:
    """Every sample holds its own time in seconds, so a window's first value is its start time."""
    rates = {"acc": 32.0, "bvp": 64.0, "eda": 4.0, "temp": 4.0}
    chans = {"acc": 3, "bvp": 1, "eda": 1, "temp": 1}
    signals = {k: np.tile(np.arange(int(seconds * r), dtype=np.float32) / np.float32(r), (chans[k], 1))
               for k, r in rates.items()}
    return Recording(subject, signals, rates, labels=labels, label_rate=label_rate)


@pytest.mark.parametrize("hop_s", [10.0, 5.0, 2.5, 0.3])
def test_windows_start_at_the_same_time_across_rates(hop_s: float) -> None:
    rec = _ramp_recording(seconds=60.0)
    ws = make_windows([rec], stress_predict_specs(10.0), 10.0, hop_s, STRESS_CLASSES)
    assert len(ws) == int(np.floor((60.0 - 10.0) / hop_s + 1e-9)) + 1
    np.testing.assert_allclose(ws.t_start, np.arange(len(ws)) * hop_s)
    for s in ws.specs:
        first = ws.x[s.name][:, 0, 0]
        assert np.abs(first - ws.t_start).max() <= 0.5 / s.sample_rate + 1e-6  # within half a sample
        np.testing.assert_allclose(ws.x[s.name][:, 0, -1] - first, 10.0 - 1.0 / s.sample_rate, atol=1e-4)
    assert (ws.y == -1).all()  # no label track -> unlabelled windows, kept


def test_window_label_majority_fraction_and_ties() -> None:
    labels = np.array([0] * 6 + [1] * 4 + [1] * 5 + [-1] * 5 + [0, 0, 1, 1, 1, -1, -1, -1, -1, -1], dtype=np.int64)
    rec = _ramp_recording(seconds=30.0, labels=labels)
    ws = make_windows([rec], stress_predict_specs(10.0), 10.0, 10.0, STRESS_CLASSES)
    assert ws.y.tolist() == [0, 1, 1]  # 6:4 -> 0; 5 of 10 labelled (=50%) -> 1; 2:3 with 5 labelled -> 1
    ws = make_windows([rec], stress_predict_specs(10.0), 10.0, 10.0, STRESS_CLASSES, min_label_fraction=0.6)
    assert ws.y.tolist() == [0, -1, -1]
    tie = _ramp_recording(seconds=10.0, labels=np.array([1] * 5 + [0] * 5))
    assert make_windows([tie], stress_predict_specs(10.0), 10.0, 10.0, STRESS_CLASSES).y.tolist() == [0]
    short_track = _ramp_recording(seconds=20.0, labels=np.array([1] * 12))  # track ends before the recording
    assert make_windows([short_track], stress_predict_specs(10.0), 10.0, 10.0, STRESS_CLASSES).y.tolist() == [1, -1]


def test_windows_with_nan_are_dropped_and_counted() -> None:
    rec = _ramp_recording(seconds=40.0)
    rec.signals["bvp"][0, int(12.0 * 64)] = np.nan  # inside windows starting at 5 and 10 (hop 5)
    ws, report = make_windows_with_report([rec], stress_predict_specs(10.0), 10.0, 5.0, STRESS_CLASSES)
    assert report.n_dropped_nonfinite == 2 and len(ws) == 5 and report.n_windows == 5
    assert ws.t_start.tolist() == [0.0, 15.0, 20.0, 25.0, 30.0]
    assert all(np.isfinite(v).all() for v in ws.x.values())


def test_recording_shorter_than_one_window() -> None:
    short = _ramp_recording("S99", seconds=5.0)
    with pytest.raises(DataError, match=r"'S99' lasts 5\.00 s, shorter than one 10 s window"):
        make_windows([_ramp_recording(), short], stress_predict_specs(10.0), 10.0, 5.0, STRESS_CLASSES)
    ws, report = make_windows_with_report(
        [_ramp_recording(), short], stress_predict_specs(10.0), 10.0, 5.0, STRESS_CLASSES, skip_short=True
    )
    assert report.skipped_short == [("S99", 5.0)] and len(ws) == 5 and set(ws.subject) == {"r"}


def test_windowing_refuses_mismatches() -> None:
    rec = _ramp_recording()
    rec.rates["eda"] = 8.0
    with pytest.raises(DataError, match="eda is at 8 Hz but the spec says 4 Hz"):
        make_windows([rec], stress_predict_specs(10.0), 10.0, 5.0, STRESS_CLASSES)
    rec = _ramp_recording()
    del rec.signals["temp"], rec.rates["temp"]
    with pytest.raises(DataError, match="lacks modality 'temp'"):
        make_windows([rec], stress_predict_specs(10.0), 10.0, 5.0, STRESS_CLASSES)
    with pytest.raises(DataError, match="out of range"):
        make_windows([_ramp_recording(labels=np.array([0, 2]))], stress_predict_specs(10.0), 10.0, 5.0, STRESS_CLASSES)
    with pytest.raises(DataError, match="not a whole number of samples"):
        make_windows([_ramp_recording()], stress_predict_specs(10.0), 10.1, 5.0, STRESS_CLASSES)


# ------------------------------------------------------------------------------------------ splits


def test_subject_splits_never_share_subjects() -> None:
    subjects = [f"S{i:02d}" for i in range(2, 36)]
    for seed in range(50):
        splits = subject_splits(np.repeat(subjects, 3), n_splits=6, val_fraction=0.1, test_fraction=0.2, seed=seed)
        assert len(splits) == 6
        for sp in splits:
            check_no_leak(sp)
            assert sorted(sp.train + sp.val + sp.test) == subjects
            assert (len(sp.train), len(sp.val), len(sp.test)) == (24, 3, 7)
        first = [set(sp.test) for sp in splits[:4]]  # 4 x 7 <= 34: test sets rotate without repeats
        assert len(set().union(*first)) == 28
    assert subject_splits(subjects, 3, 0.1, 0.2, seed=7) == subject_splits(subjects, 3, 0.1, 0.2, seed=7)
    assert subject_splits(subjects, 3, 0.1, 0.2, seed=7) != subject_splits(subjects, 3, 0.1, 0.2, seed=8)
    with pytest.raises(DataError, match="leave one to train"):
        subject_splits(["a", "b"], 1, 0.5, 0.5, seed=0)


def test_split_indices_and_leak_check(stress_recs: list[Recording]) -> None:
    ws = make_windows(stress_recs, stress_predict_specs(10.0), 10.0, 10.0, STRESS_CLASSES)
    sp = Split(train=("S02",), val=("S03",), test=("S17",))
    tr, va, te = sp.indices(ws)
    assert len(tr) + len(va) + len(te) == len(ws)
    assert set(ws.subject[tr]) == {"S02"} and set(ws.subject[va]) == {"S03"} and set(ws.subject[te]) == {"S17"}
    check_no_leak(sp, ws)
    with pytest.raises(DataError, match=r"\['S02'\] are in both train and test"):
        check_no_leak(Split(train=("S02", "S03"), val=(), test=("S02",)))


def test_stratified_kfold_covers_every_index_once() -> None:
    y = np.repeat(np.arange(5), [30, 30, 30, 7, 3])
    folds = stratified_kfold(y, 5, seed=1)
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested.tolist()) == list(range(len(y)))
    for tr, te in folds:
        assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(y)
        assert np.bincount(y[te], minlength=5)[:3].tolist() == [6, 6, 6]
    assert max(len(te) for _, te in folds) - min(len(te) for _, te in folds) <= 1
    with pytest.raises(DataError, match="k must be"):
        stratified_kfold(y, 1, seed=0)


def test_sample_labels_is_stratified() -> None:
    y = np.array([0] * 990 + [1] * 10 + [-1] * 500)
    idx = sample_labels(y, fraction=0.01, seed=3)
    assert np.bincount(y[idx]).tolist() == [10, 1]  # round(0.1) = 0 -> min_per_class keeps one
    assert (y[idx] >= 0).all() and len(set(idx.tolist())) == len(idx)
    np.testing.assert_array_equal(idx, sample_labels(y, fraction=0.01, seed=3))
    assert np.bincount(y[sample_labels(y, per_class=5)]).tolist() == [5, 5]
    assert np.bincount(y[sample_labels(y, per_class=50)]).tolist() == [50, 10]  # capped at the class size
    assert np.bincount(y[sample_labels(y, fraction=0.01, min_per_class=3)]).tolist() == [10, 3]
    with pytest.raises(DataError, match="exactly one"):
        sample_labels(y, fraction=0.1, per_class=2)


# ------------------------------------------------------------------------------------------ normalisation


def _toy_windowset(n: int = 40) -> WindowSet:
    rng = np.random.default_rng(0)
    specs = (ModalitySpec("acc", "acc", 3, 32.0, 64), ModalitySpec("eda", "eda", 1, 4.0, 8))
    x = {"acc": rng.normal(2.0, 3.0, (n, 3, 64)).astype(np.float32), "eda": np.full((n, 1, 8), 0.5, np.float32)}
    subject = np.array(["a"] * (n // 2) + ["b"] * (n - n // 2))
    x["acc"][subject == "b"] += 100.0  # the held-out subject is far off: fitting on it would show
    return WindowSet(specs, x, np.zeros(n, np.int64), subject, np.array([""] * n), np.zeros(n), ("c",))


def test_normstats_fit_on_train_only_apply_and_json() -> None:
    ws = _toy_windowset()
    train = np.flatnonzero(ws.subject == "a")
    stats = NormStats.fit(ws, train)
    assert stats == NormStats.fit(ws.subset(train))
    np.testing.assert_allclose(stats.mean["acc"], ws.x["acc"][train].mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(stats.std["acc"], ws.x["acc"][train].std(axis=(0, 2)), rtol=1e-5)
    assert max(stats.mean["acc"]) < 10 < min(NormStats.fit(ws).mean["acc"])
    out = stats.apply(ws.subset(train))
    assert out.x["acc"].dtype == np.float32
    np.testing.assert_allclose(out.x["acc"].mean(axis=(0, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.x["acc"].std(axis=(0, 2)), 1.0, atol=1e-4)
    assert stats.std["eda"] == [0.0] and np.isfinite(out.x["eda"]).all() and (out.x["eda"] == 0).all()
    again = NormStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert again == stats


def test_normstats_refuses_mismatched_data() -> None:
    ws = _toy_windowset()
    stats = NormStats.fit(ws)
    wrong_channels = NormStats(mean={**stats.mean, "acc": [0.0, 0.0]}, std={**stats.std, "acc": [1.0, 1.0]})
    with pytest.raises(DataError, match="'acc' have 2 channels, the data has 3"):
        wrong_channels.apply(ws)
    missing = NormStats(mean={"acc": stats.mean["acc"]}, std={"acc": stats.std["acc"]})
    with pytest.raises(DataError, match="lack modality 'eda'"):
        missing.apply(ws)
    with pytest.raises(DataError):
        NormStats.from_dict({"mean": {"acc": [0.0]}})


# ------------------------------------------------------------------------------------------ bring your own


BYO_SPECS = (
    ModalitySpec("imu", "imu", 6, 50.0, 1, units="mixed"),
    ModalitySpec("eda", "eda", 1, 4.0, 1, units="uS"),
)


def _byo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "byo"
    save_byo_dataset(folder, BYO_SPECS, ["sit", "walk"], window_s=2.0, hop_s=1.0)
    rng = np.random.default_rng(1)
    for i, labelled in enumerate((True, False)):
        rec = Recording(
            subject=f"user{i}",
            signals={"imu": rng.normal(size=(6, 500)).astype(np.float32),
                     "eda": rng.random((1, 40)).astype(np.float32)},
            rates={"imu": 50.0, "eda": 4.0},
            labels=np.array([0] * 5 + [1] * 5) if labelled else None,
            label_rate=1.0,
            group="2025-01-0" + str(i + 1),
            meta={"device": "board-1"},
        )
        save_byo_recording(folder / f"rec{i}.npz", rec)
    return folder


def test_byo_round_trip(tmp_path: Path) -> None:
    folder = _byo_folder(tmp_path)
    recs, specs, classes = load_byo(folder)
    assert classes == ("sit", "walk") and [s.name for s in specs] == ["imu", "eda"]
    assert [s.window for s in specs] == [100, 8]  # from window_s in dataset.json
    assert [r.subject for r in recs] == ["user0", "user1"] and recs[0].group == "2025-01-01"
    assert recs[0].signals["imu"].shape == (6, 500) and recs[0].rates == {"imu": 50.0, "eda": 4.0}
    assert recs[0].labels.tolist() == [0] * 5 + [1] * 5 and recs[1].labels is None
    assert recs[0].meta == {"device": "board-1", "file": "rec0.npz"}
    save_byo_recording(tmp_path / "copy.npz", recs[0])
    with np.load(tmp_path / "copy.npz") as z, np.load(folder / "rec0.npz") as orig:
        np.testing.assert_array_equal(z["imu"], orig["imu"])
    ws = load_windows("byo", root=folder)
    assert len(ws) == 2 * 9 and ws.x["imu"].shape[1:] == (6, 100)
    assert (ws.y[ws.subject == "user1"] == -1).all() and set(ws.y[ws.subject == "user0"].tolist()) == {0, 1}


def _bad(folder: Path, **arrays) -> None:
    base = {"imu": np.zeros((6, 100), np.float32), "imu__rate": np.array(50.0), "eda": np.zeros((1, 8), np.float32),
            "eda__rate": np.array(4.0)}
    base.update(arrays)
    np.savez(folder / "bad.npz", **{k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"eda": None, "eda__rate": None}, "missing modality 'eda'"),
        ({"eda__rate": np.array(8.0)}, "'eda' is at 8 Hz but dataset.json says 4 Hz"),
        ({"imu": np.full((6, 100), np.nan, np.float32)}, "'imu' holds 600 NaN/inf values"),
        ({"imu": np.zeros((3, 100), np.float32)}, "'imu' has 3 channels, dataset.json says 6"),
        ({"eda": np.zeros((2, 3, 4))}, "expected \\[C, L\\]"),
        ({"labels": np.array([0, 5]), "labels__rate": np.array(1.0)}, "labels range 0..5"),
        ({"labels": np.array([0, 1])}, "needs 'labels__rate'"),
        ({"eda_rate": np.array(4.0)}, "unknown arrays \\['eda_rate'\\]"),
    ],
)
def test_byo_bad_inputs(tmp_path: Path, arrays: dict, message: str) -> None:
    folder = tmp_path / "byo"
    save_byo_dataset(folder, BYO_SPECS, ["sit", "walk"])
    _bad(folder, **arrays)
    with pytest.raises(DataError, match=message):
        load_byo(folder)


def test_byo_bad_folder_and_dataset_json(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_byo(tmp_path / "none")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="dataset.json is missing"):
        load_byo(tmp_path / "x")
    (tmp_path / "x" / "dataset.json").write_text('{"modalities": [{"name": "eda", "kind": "sweat", "channels": 1, '
                                                  '"sample_rate": 4}], "class_names": []}')
    with pytest.raises(DataError, match="unknown kind 'sweat'"):
        load_byo(tmp_path / "x")
    save_byo_dataset(tmp_path / "y", BYO_SPECS, [])
    with pytest.raises(DataError, match="no .npz recordings"):
        load_byo(tmp_path / "y")


# ------------------------------------------------------------------------------------------ download


PREFIX = "Stress-Predict-Dataset-test/"
INCLUDE = ARCHIVES["stress-predict"].include


def _zip_subset(stress_root: Path, tmp_path: Path, tamper: bool = False) -> tuple[Path, str]:
    """A zip of a 2-subject stress-predict subset under PREFIX, and the tree digest of the untampered content."""
    src = _copy_subject(stress_root, tmp_path / ("src_t" if tamper else "src"), "S02")
    shutil.copytree(stress_root / "Raw_data/S03", src / "Raw_data/S03")
    (src / "README.md").write_text("not part of the digest\n")
    digest = tree_digest(src, INCLUDE)
    if tamper:
        _replace_line(src / "Raw_data/S03/EDA.csv", 10, "9.999999")
    zpath = tmp_path / ("served_t" if tamper else "served") / "archive.zip"
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, PREFIX + p.relative_to(src).as_posix())
        zf.writestr("outside.txt", "ignored")
    return zpath, digest


class _Server:
    """http.server on 127.0.0.1 (a free port) serving one folder, in a thread."""

    def __init__(self, folder: Path) -> None:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/archive.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def test_download_verify_cache_and_tamper(stress_root: Path, tmp_path: Path) -> None:
    zpath, digest = _zip_subset(stress_root, tmp_path)
    cache = tmp_path / "cache"
    server = _Server(zpath.parent)
    try:
        got = fetch_archive(server.url, cache, "stress-predict", digest, strip_prefix=PREFIX, include=INCLUDE)
    finally:
        server.stop()
    assert got == cache / "stress-predict" and (got / "README.md").is_file() and not (got / "outside.txt").exists()
    assert tree_digest(got, INCLUDE) == digest
    assert [r.subject for r in load_stress_predict(got)] == ["S02", "S03"]
    # the server is stopped: a second call is served from the verified cache
    assert fetch_archive(server.url, cache, "stress-predict", digest, strip_prefix=PREFIX, include=INCLUDE) == got
    with pytest.raises(DataError, match="not a copy verified"):
        fetch_archive(server.url, cache, "stress-predict", "0" * 64, strip_prefix=PREFIX, include=INCLUDE)

    bad_zip, _ = _zip_subset(stress_root, tmp_path, tamper=True)
    server = _Server(bad_zip.parent)
    try:
        with pytest.raises(DataError, match=f"expected tree digest {digest}, got [0-9a-f]{{64}}"):
            fetch_archive(server.url, tmp_path / "cache2", "stress-predict", digest,
                          strip_prefix=PREFIX, include=INCLUDE)
    finally:
        server.stop()
    assert list((tmp_path / "cache2").iterdir()) == []  # nothing installed, temp folder removed
    with pytest.raises(DataError, match="could not download .*CROSSL_EDGE_DATA"):
        fetch_archive(server.url, tmp_path / "cache3", "stress-predict", digest, strip_prefix=PREFIX, include=INCLUDE)


def test_find_dataset_root_downloads_last(stress_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zpath, digest = _zip_subset(stress_root, tmp_path)
    server = _Server(zpath.parent)
    monkeypatch.setitem(ARCHIVES, "stress-predict", Archive(server.url, PREFIX, digest, INCLUDE))
    monkeypatch.setenv("CROSSL_EDGE_DATA", str(tmp_path / "no-data-here"))
    monkeypatch.setenv("CROSSL_EDGE_CACHE", str(tmp_path / "cache"))
    try:
        with pytest.raises(DataError, match="downloading is off"):
            find_dataset_root("stress-predict", download=False)
        root = find_dataset_root("stress-predict")
    finally:
        server.stop()
    assert root == tmp_path / "cache" / "datasets" / "stress-predict"
    assert find_dataset_root("stress-predict", download=False) == root  # now found in the cache


def test_pinned_digests_match_the_shared_copies(datasets_root: Path) -> None:
    for name, archive in ARCHIVES.items():
        assert tree_digest(datasets_root / name, archive.include) == archive.tree_sha256, name


# ------------------------------------------------------------------------------------------ registry


def test_load_windows_by_name(stress_recs: list[Recording]) -> None:
    ws = load_windows("stress-predict", subjects=["S02", "S03"])
    assert set(ws.subject) == {"S02", "S03"} and ws.x["eda"].shape[1:] == (1, 40)
    assert len(ws) == sum(int((r.duration() - 10) // 5) + 1 for r in stress_recs[:2])
    ws = load_windows("lis-emg-imu", modalities=["emg"])
    assert ws.names == ("emg",) and len(ws) == 780
    with pytest.raises(DataError, match="valid names: stress-predict, lis-emg-imu, byo"):
        load_windows("wesad")
    with pytest.raises(DataError, match="unknown options \\['bogus'\\]"):
        load_windows("lis-emg-imu", bogus=True)
    with pytest.raises(DataError, match="modalities \\['ecg'\\] not in"):
        load_windows("lis-emg-imu", modalities=["ecg"])


def test_data_layer_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, crossl_edge.data; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_byo_unknown_keys_are_refused_naming_them_and_the_known_ones(tmp_path: Path) -> None:
    """Issue 16 stumble 5: a key the loader does not know was silently ignored ("window" inside a modality,
    as the README's own example had it). The README's example is the one a new user copies: it must load."""
    import json
    import re

    from crossl_edge.data.byo import read_byo_config

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = json.loads(re.search(r"### Bring your own sensors.*?```json\n(.*?)```", readme, re.S).group(1))
    (tmp_path / "readme").mkdir()
    (tmp_path / "readme" / "dataset.json").write_text(json.dumps(example))
    config = read_byo_config(tmp_path / "readme")
    assert [s.window for s in config.specs] == [500, 40]  # from window_s: 10 s at 50 Hz and at 4 Hz

    for name, change, message in [
        ("window", lambda d: d["modalities"][0].update(window=1),
         r"modalities\[0\] \('acc'\) has unknown keys \['window'\] \(the window length is dataset.json's window_s.*"
         r"known keys of a modality are name, kind, channels, sample_rate, units, channel_names"),
        ("rate", lambda d: d["modalities"][1].update(rate=4),
         r"modalities\[1\] \('eda'\) has unknown keys \['rate'\]; the known keys of a modality are name, kind"),
        ("top", lambda d: d.update(windows_s=10),
         r"unknown keys \['windows_s'\]; the known keys are modalities, class_names, window_s, hop_s"),
    ]:
        d = json.loads(json.dumps(example))
        change(d)
        (tmp_path / name).mkdir()
        (tmp_path / name / "dataset.json").write_text(json.dumps(d))
        with pytest.raises(DataError, match=message):
            read_byo_config(tmp_path / name)
