"""Data sets by name, with their default windowing, and `load_windows` from name to WindowSet.

Defaults and why:
- stress-predict: 10 s windows, 5 s hop. Labels are per second in long contiguous task blocks (minutes),
  so a 10 s window is almost always one class (the majority rule only matters at the 6 transitions per
  subject); 10 s is what the data set's prototype and DESIGN use (320 ACC / 640 BVP / 40 EDA / 40 TEMP
  samples, enough for a few heart beats and an EDA trend), and a 5 s hop doubles the windows (about
  22,500, two thirds rest) without cutting across subjects: splits are by subject, so overlap never
  crosses train/test.
- lis-emg-imu: 2 s window, 2 s hop: one window per file, the whole gesture.
- byo: window_s/hop_s from dataset.json when given there, else they must be passed.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from crossl_edge.data.byo import load_byo, read_byo_config
from crossl_edge.data.lis_emg_imu import CLASS_NAMES as LIS_CLASSES
from crossl_edge.data.lis_emg_imu import lis_specs, load_lis_emg_imu
from crossl_edge.data.locate import find_dataset_root
from crossl_edge.data.stress_predict import CLASS_NAMES as STRESS_CLASSES
from crossl_edge.data.stress_predict import load_stress_predict, stress_predict_specs
from crossl_edge.data.types import DataError, WindowSet
from crossl_edge.data.windowing import make_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    """What `load_windows` needs to know about a data set."""

    name: str
    loader: Callable[..., Any]  # (root, **options) -> list[Recording]; for byo (folder) -> (recs, specs, classes)
    specs: Callable[..., tuple] | None  # (window_s, **options) -> specs; None: from the data (byo)
    window_s: float | None
    hop_s: float | None
    class_names: tuple[str, ...]  # empty: from the data (byo)
    description: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "stress-predict": DatasetInfo(
        "stress-predict", load_stress_predict, stress_predict_specs, 10.0, 5.0, STRESS_CLASSES,
        "Empatica E4 wrist ACC/BVP/EDA/TEMP, 34 labelled subjects, rest vs stress per second",
    ),
    "lis-emg-imu": DatasetInfo(
        "lis-emg-imu", load_lis_emg_imu, lis_specs, 2.0, 2.0, LIS_CLASSES,
        "Myo armband EMG 8 ch + IMU, one signer, 26 letters x 30 gestures of 2 s",
    ),
    "byo": DatasetInfo("byo", load_byo, None, None, None, (), "your own .npz recordings + dataset.json"),
}

_WINDOW_KW = ("min_label_fraction", "skip_short")


def _params(fn: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(fn).parameters)


def load_windows(
    name: str,
    root: str | Path | None = None,
    window_s: float | None = None,
    hop_s: float | None = None,
    subjects: Sequence[str] | None = None,
    download: bool = True,
    modalities: Sequence[str] | None = None,
    **kw: Any,
) -> WindowSet:
    """Load data set `name` and cut it into windows (defaults from DATASETS[name]).

    `subjects` keeps only those subjects; `modalities` keeps only those modalities (in that order).
    Extra keywords go to the loader (e.g. include_orientation=True, require_labels=False) or to
    make_windows (min_label_fraction, skip_short); an unknown keyword is refused.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    info = DATASETS[name]
    window_kw = {k: kw.pop(k) for k in _WINDOW_KW if k in kw}

    if name == "byo":
        if kw:
            raise DataError(f"unknown options {sorted(kw)} for byo; valid: {', '.join(_WINDOW_KW)}")
        folder = find_dataset_root("byo", root, download=False)
        config = read_byo_config(folder)
        recordings, specs, class_names = load_byo(folder)
        window_s = window_s if window_s is not None else config.window_s
        hop_s = hop_s if hop_s is not None else (config.hop_s if config.hop_s is not None else window_s)
        if window_s is None:
            raise DataError(f"{folder}/dataset.json gives no window_s; pass window_s= (seconds)")
    else:
        loader_params = _params(info.loader) - {"root", "subjects"}
        spec_params = _params(info.specs) - {"window_s"}  # type: ignore[arg-type]
        unknown = set(kw) - loader_params - spec_params
        if unknown:
            valid = sorted((loader_params | spec_params | set(_WINDOW_KW)))
            raise DataError(f"unknown options {sorted(unknown)} for {name}; valid: {', '.join(valid)}")
        folder = find_dataset_root(name, root, download=download)
        loader_kw = {k: v for k, v in kw.items() if k in loader_params}
        if "subjects" in _params(info.loader):
            loader_kw["subjects"] = subjects
        recordings = info.loader(folder, **loader_kw)
        window_s = info.window_s if window_s is None else window_s
        hop_s = info.hop_s if hop_s is None else hop_s
        specs = info.specs(window_s, **{k: v for k, v in kw.items() if k in spec_params})  # type: ignore[misc]
        class_names = info.class_names

    if subjects is not None and not (info.specs is not None and "subjects" in _params(info.loader)):
        wanted = {str(s) for s in subjects}
        present = {r.subject for r in recordings}
        missing = wanted - present
        if missing:
            raise DataError(f"subjects {sorted(missing)} not in {name}; present: {', '.join(sorted(present))}")
        recordings = [r for r in recordings if r.subject in wanted]
    if modalities is not None:
        by_name = {s.name: s for s in specs}
        missing = [m for m in modalities if m not in by_name]
        if missing:
            raise DataError(f"modalities {missing} not in {name}; available: {', '.join(by_name)}")
        specs = tuple(by_name[m] for m in modalities)
    ws = make_windows(recordings, specs, window_s, hop_s or window_s, class_names, **window_kw)
    counts = np.bincount(ws.y[ws.y >= 0], minlength=len(class_names)).tolist()
    log.info("%s: %d windows, classes %s", name, len(ws), dict(zip(class_names, counts)))
    return ws
