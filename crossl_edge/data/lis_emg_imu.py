"""Loader for the Italian Sign Language alphabet set (Myo armband: 8-channel EMG + IMU, one signer).

Published layout (see ../shared/datasets/lis-emg-imu/SOURCE.md): Dataset/<letter>/<GUID>.json, 26 letters x
30 gestures, each 2 s:

    {"timestamp": "26/06/20/22:28:12", "duration": 2000,
     "emg": {"frequency": 200, "data": 400 x 8 integers in -128..127},
     "imu": {"frequency": 200, "data": 400 x {"acceleration": 3, "gyroscope": 3, "orientation": 4}}}

Each file becomes one Recording: modalities "emg" (8 ch, raw Myo units), "acc" (3 ch, g), "gyro"
(3 ch, deg/s) and, only with include_orientation=True, "orientation" (4 ch, unit quaternion, component
order as logged). Orientation is left out by default because it is a session shortcut (SOURCE.md: the
mean quaternion scores macro-F1 0.80 on a random split and 0.03 on a held-out day).

Quirk kept as published: the Myo IMU runs at about 50 Hz and is held at 200 Hz in the log, so about 25%
of consecutive IMU rows are exact repeats. Nothing is resampled or deduplicated.

The label is constant over a file (letter index 0..25, class names "A".."Z"), stored as a 1 Hz track of
two entries. `group` is the recording day from `timestamp` ("26/06/20/..." -> "2020-06-26"): the only
meaningful held-out day is 2020-07-09 (the other days lack letters). Parsing 780 JSON files takes
seconds, so the parsed arrays are cached in one .npz (see cache.py).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import string
from pathlib import Path

import numpy as np

from crossl_edge.data.cache import files_key, load_cached, parsed_cache_dir, save_cached
from crossl_edge.data.locate import find_dataset_root
from crossl_edge.data.types import DataError, Recording
from crossl_edge.spec import ModalitySpec

log = logging.getLogger(__name__)

NAME = "lis-emg-imu"
CLASS_NAMES: tuple[str, ...] = tuple(string.ascii_uppercase)
RATE = 200.0
SAMPLES = 400  # 2 s at 200 Hz
HELD_OUT_DAY = "2020-07-09"  # the one day that holds every letter


def lis_specs(window_s: float = 2.0, include_orientation: bool = False) -> tuple[ModalitySpec, ...]:
    """EMG/ACC/GYRO (and optionally ORIENTATION) specs, all 200 Hz, window `window_s` seconds (2 s = 400)."""
    base = [
        ModalitySpec("emg", "emg", 8, RATE, 1, units="raw", channel_names=tuple(f"emg{i}" for i in range(1, 9))),
        ModalitySpec("acc", "acc", 3, RATE, 1, units="g", channel_names=("x", "y", "z")),
        ModalitySpec("gyro", "gyro", 3, RATE, 1, units="deg/s", channel_names=("x", "y", "z")),
    ]
    if include_orientation:
        quaternion = ("q0", "q1", "q2", "q3")
        base.append(ModalitySpec("orientation", "orientation", 4, RATE, 1, units="", channel_names=quaternion))
    return tuple(s.with_window_seconds(window_s) for s in base)


def parse_timestamp(text: str) -> _dt.datetime:
    """'26/06/20/22:28:12' (day/month/2-digit year/time) -> datetime(2020, 6, 26, 22, 28, 12)."""
    try:
        return _dt.datetime.strptime(text, "%d/%m/%y/%H:%M:%S")
    except (TypeError, ValueError) as e:
        raise DataError(f"timestamp {text!r} is not in the form dd/mm/yy/HH:MM:SS") from e


def _parse_file(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(emg int16 [400, 8], imu float32 [400, 10] = acc 3, gyro 3, orientation 4, timestamp) of one JSON file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            d = json.load(f)
        emg_block, imu_block, stamp = d["emg"], d["imu"], d["timestamp"]
        for what, block in (("emg", emg_block), ("imu", imu_block)):
            if block.get("frequency") != RATE:
                raise DataError(f"{path}: {what} frequency {block.get('frequency')!r}, expected {RATE:g}")
        emg = np.asarray(emg_block["data"], dtype=np.int16)
        rows = imu_block["data"]
        imu = np.asarray(
            [r["acceleration"] + r["gyroscope"] + r["orientation"] for r in rows], dtype=np.float32
        )
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise DataError(
            f"{path}: not a valid gesture file ({type(e).__name__}: {e}); expected keys timestamp, emg, imu as in the "
            "published readme"
        ) from e
    if emg.shape != (SAMPLES, 8):
        raise DataError(f"{path}: emg data of shape {emg.shape}, expected ({SAMPLES}, 8)")
    if imu.shape != (SAMPLES, 10):
        raise DataError(f"{path}: imu data of shape {imu.shape}, expected {SAMPLES} rows of 3+3+4 values")
    parse_timestamp(stamp)
    return emg, imu, stamp


def _files(root: Path) -> list[tuple[str, Path]]:
    base = root / "Dataset"
    if not base.is_dir():
        raise DataError(
            f"{root} has no Dataset/ folder; is it the lis-emg-imu folder? Set CROSSL_EDGE_DATA or pass --data"
        )
    out = []
    for letter_dir in sorted(base.iterdir()):
        if not letter_dir.is_dir():
            continue
        if letter_dir.name not in CLASS_NAMES:
            raise DataError(f"{letter_dir}: folder name is not a letter A..Z")
        out.extend((letter_dir.name, p) for p in sorted(letter_dir.glob("*.json")))
    if not out:
        raise DataError(f"{base} holds no <letter>/<GUID>.json files")
    return out


def _parse_all(files: list[tuple[str, Path]]) -> dict[str, np.ndarray]:
    emg = np.empty((len(files), SAMPLES, 8), dtype=np.int16)
    imu = np.empty((len(files), SAMPLES, 10), dtype=np.float32)
    stamps = []
    for i, (_, path) in enumerate(files):
        emg[i], imu[i], stamp = _parse_file(path)
        stamps.append(stamp)
    return {
        "emg": emg,
        "imu": imu,
        "timestamp": np.array(stamps, dtype=str),
        "letter": np.array([letter for letter, _ in files], dtype=str),
        "guid": np.array([p.stem for _, p in files], dtype=str),
    }


def load_lis_emg_imu(
    root: str | Path | None,
    *,
    include_orientation: bool = False,
    use_cache: bool = True,
) -> list[Recording]:
    """One Recording per gesture file (780 on the published set): float32 [C, 400] per modality at 200 Hz.

    Recordings are ordered by letter, then time. subject is "signer" (one person recorded everything),
    group is the recording day ("2020-06-26"), meta holds the file's guid and timestamp.
    """
    root = find_dataset_root(NAME, root, download=root is None)
    files = _files(root)
    cache_path = parsed_cache_dir(NAME, root) / "all.npz"
    key = files_key([p for _, p in files])
    arrays = load_cached(cache_path, key) if use_cache else None
    if arrays is None:
        arrays = _parse_all(files)
        if use_cache:
            save_cached(cache_path, key, arrays)
    else:
        log.debug("lis-emg-imu: parsed arrays from cache %s", cache_path)

    times = [parse_timestamp(s) for s in arrays["timestamp"]]
    order = sorted(range(len(times)), key=lambda i: (arrays["letter"][i], times[i], arrays["guid"][i]))
    recordings = []
    for i in order:
        letter = str(arrays["letter"][i])
        emg = arrays["emg"][i].T.astype(np.float32)  # [400, 8] -> [8, 400]
        imu = arrays["imu"][i].T  # [10, 400]
        signals = {"emg": emg, "acc": np.ascontiguousarray(imu[0:3]), "gyro": np.ascontiguousarray(imu[3:6])}
        if include_orientation:
            signals["orientation"] = np.ascontiguousarray(imu[6:10])
        rec = Recording(
            subject="signer",
            signals=signals,
            rates={name: RATE for name in signals},
            labels=np.full(int(SAMPLES / RATE), CLASS_NAMES.index(letter), dtype=np.int64),
            label_rate=1.0,
            group=times[i].date().isoformat(),
            meta={"guid": str(arrays["guid"][i]), "timestamp": str(arrays["timestamp"][i]), "letter": letter},
        )
        rec.check()
        recordings.append(rec)
    log.info("lis-emg-imu: loaded %d gesture recordings from %s", len(recordings), root)
    return recordings
