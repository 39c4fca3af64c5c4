"""Loader for Stress-Predict (Empatica E4 wrist data of 35 people, rest/stress labels per second).

Published layout (see ../shared/datasets/stress-predict/SOURCE.md):

    Raw_data/SXX/{ACC,BVP,EDA,TEMP}.csv   Empatica CSV: row 1 = start (unix s, one value per column),
                                          row 2 = sample rate (Hz), then one sample per row
    Processed_data/Improved_All_Combined_hr_rsp_binary.csv
                                          Participant, HR, respr, Time(sec) (unix s), Label (0 rest, 1 stress)

What the loader does:
- ACC (3 ch, 32 Hz) is converted from 1/64 g to g; BVP (64 Hz, arbitrary units), EDA (4 Hz, uS) and TEMP
  (4 Hz, deg C) are kept as published.
- The modalities are aligned on the latest start time (the others are cropped at the front), so sample 0 of
  every modality is time 0 of the Recording.
- Labels come from the per-second label file only, placed on a 1 Hz track from time 0 (-1 where the file
  has no row). The tags_*.csv files are not used: tags_S17/S18/S30 are about 12 hours off.
- S01 has no label rows. It is skipped (and logged) when labels are required, and returned with
  `labels=None` when `require_labels=False` (for unlabelled pretraining).
- Parsing is np.loadtxt's C reader; parsed, aligned arrays are cached as one .npz per subject (see
  cache.py), keyed by the CSV files' path, size and mtime, so a second load skips the CSV parsing.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from crossl_edge.data.cache import files_key, load_cached, parsed_cache_dir, save_cached
from crossl_edge.data.locate import find_dataset_root
from crossl_edge.data.types import DataError, Recording
from crossl_edge.spec import ModalitySpec

log = logging.getLogger(__name__)

NAME = "stress-predict"
CLASS_NAMES: tuple[str, ...] = ("rest", "stress")
LABEL_FILE = "Processed_data/Improved_All_Combined_hr_rsp_binary.csv"
LABEL_RATE = 1.0

#: file stem, modality name, channels, expected rate (Hz), scale applied to the published values
_SOURCES: tuple[tuple[str, str, int, float, float], ...] = (
    ("ACC", "acc", 3, 32.0, 1.0 / 64.0),  # 1/64 g -> g
    ("BVP", "bvp", 1, 64.0, 1.0),
    ("EDA", "eda", 1, 4.0, 1.0),
    ("TEMP", "temp", 1, 4.0, 1.0),
)


def stress_predict_specs(window_s: float = 10.0) -> tuple[ModalitySpec, ...]:
    """ACC/BVP/EDA/TEMP specs with a window of `window_s` seconds at each native rate (10 s: 320/640/40/40)."""
    base = (
        ModalitySpec("acc", "acc", 3, 32.0, 1, units="g", channel_names=("x", "y", "z")),
        ModalitySpec("bvp", "bvp", 1, 64.0, 1, units="a.u.", channel_names=("bvp",)),
        ModalitySpec("eda", "eda", 1, 4.0, 1, units="uS", channel_names=("eda",)),
        ModalitySpec("temp", "temp", 1, 4.0, 1, units="degC", channel_names=("temp",)),
    )
    return tuple(s.with_window_seconds(window_s) for s in base)


# ---------------------------------------------------------------------------------------------- parsing


def _first_bad_line(
    path: Path, ncols: int, skip: int, usecols: Sequence[int] | None = None
) -> tuple[int, str, str] | None:
    """(1-based line number, problem, text) of the first row without `ncols` cells or with a non-number in `usecols`."""
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno <= skip:
                continue
            text = line.strip()
            if not text:
                continue
            cells = text.split(",")
            if len(cells) != ncols:
                return lineno, f"{len(cells)} columns where {ncols} are expected", text
            for cell in cells if usecols is None else [cells[i] for i in usecols]:
                try:
                    float(cell)
                except ValueError:
                    return lineno, f"non-numeric value {cell.strip()!r}", text
    return None


def _corrupt(path: Path, lineno: int, problem: str, text: str) -> DataError:
    return DataError(
        f"{path}: line {lineno}: {problem}: {text[:80]!r}. The file is corrupt or truncated; restore it from the "
        "published archive (or delete the cached download so it is fetched again)"
    )


def _read_table(path: Path, ncols: int, skip: int, usecols: Sequence[int] | None = None) -> np.ndarray:
    """The numeric rows of a CSV after `skip` header lines as float64 [rows, ncols or len(usecols)]."""
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=skip, usecols=usecols, ndmin=2, dtype=np.float64)
    except ValueError as e:
        bad = _first_bad_line(path, ncols, skip, usecols)
        if bad is not None:
            raise _corrupt(path, *bad) from e
        raise DataError(f"{path}: could not be parsed as numbers ({e}); the file is corrupt") from e
    width = ncols if usecols is None else len(usecols)
    if data.shape[1] != width:
        bad = _first_bad_line(path, ncols, skip, usecols)
        if bad is not None:
            raise _corrupt(path, *bad)
        raise DataError(f"{path}: {data.shape[1]} columns where {ncols} are expected")
    return data


def _read_empatica(path: Path, ncols: int) -> tuple[float, float, np.ndarray]:
    """(start unix time, rate Hz, samples float64 [L, ncols]) of one Empatica E4 CSV."""
    if not path.is_file():
        raise DataError(f"{path} is missing; each Raw_data/SXX/ folder must hold ACC, BVP, EDA and TEMP .csv files")
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        head = [f.readline(), f.readline()]
    values = []
    for lineno, line in enumerate(head, start=1):
        try:
            row = [float(c) for c in line.strip().split(",")]
        except ValueError:
            raise _corrupt(path, lineno, "header row is not numeric (row 1 = start time, row 2 = rate)", line) from None
        if len(row) != ncols:
            raise _corrupt(path, lineno, f"{len(row)} columns where {ncols} are expected", line)
        values.append(row)
    starts, rates = values
    if len(set(starts)) != 1 or len(set(rates)) != 1:
        raise DataError(f"{path}: columns disagree on start time {starts} or rate {rates}; expected one value each")
    data = _read_table(path, ncols, skip=2)
    if len(data) == 0:
        raise DataError(f"{path} holds no samples after its two header rows")
    return starts[0], rates[0], data


def _parse_subject(folder: Path) -> dict[str, np.ndarray]:
    """Aligned float32 [C, L] arrays of one subject plus its aligned start time ('start', unix s)."""
    raw: dict[str, tuple[float, float, np.ndarray]] = {}
    for stem, name, ncols, rate, scale in _SOURCES:
        path = folder / f"{stem}.csv"
        start, got_rate, data = _read_empatica(path, ncols)
        if abs(got_rate - rate) > 1e-6:
            raise DataError(f"{path}: sample rate {got_rate:g} Hz in row 2, expected {rate:g} Hz for {stem}")
        raw[name] = (start, rate, data * scale if scale != 1.0 else data)
    start = max(s for s, _, _ in raw.values())
    out: dict[str, np.ndarray] = {"start": np.array(start, dtype=np.float64)}
    for name, (s, rate, data) in raw.items():
        crop = int(round((start - s) * rate))
        if crop:
            log.debug("%s %s: cropping %d samples to align on the latest start", folder.name, name, crop)
        out[name] = np.ascontiguousarray(data[crop:].T, dtype=np.float32)  # [C, L]
    return out


def _subject_folders(root: Path) -> dict[str, Path]:
    raw = root / "Raw_data"
    if not raw.is_dir():
        raise DataError(
            f"{root} has no Raw_data/ folder; is it the stress-predict folder? Set CROSSL_EDGE_DATA or pass --data"
        )
    found = {p.name: p for p in sorted(raw.iterdir()) if p.is_dir() and re.fullmatch(r"S\d{2}", p.name)}
    if not found:
        raise DataError(f"{raw} holds no SXX subject folders")
    return found


def _read_labels(root: Path, use_cache: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{subject: (unix times float64 [K], labels int64 [K])} from the per-second label file."""
    path = root / LABEL_FILE
    if not path.is_file():
        raise DataError(f"{path} is missing: the per-second label file is needed for labelled subjects")
    cache_path = parsed_cache_dir(NAME, root) / "labels.npz"
    key = files_key([path])
    cached = load_cached(cache_path, key) if use_cache else None
    if cached is None:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            header = f.readline().strip().split(",")
        if header[:1] != ["Participant"] or len(header) != 5 or header[3] != "Time(sec)" or header[4] != "Label":
            raise DataError(f"{path}: unexpected header {header}; expected Participant,HR,respr,Time(sec),Label")
        # HR is empty on some rows; only Participant, Time and Label are read.
        table = _read_table(path, 5, skip=1, usecols=(0, 3, 4))
        cached = {"table": table}
        if use_cache:
            save_cached(cache_path, key, cached)
    table = cached["table"]
    labels = table[:, 2]
    if not np.isin(labels, (0, 1)).all():
        bad = sorted(set(np.unique(labels).tolist()) - {0.0, 1.0})
        raise DataError(f"{path}: Label column holds {bad[:5]}; only 0 (rest) and 1 (stress) are valid")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for p in np.unique(table[:, 0]):
        rows = table[table[:, 0] == p]
        out[f"S{int(p):02d}"] = (rows[:, 1], rows[:, 2].astype(np.int64))
    return out


def _label_track(times: np.ndarray, labels: np.ndarray, start: float, duration: float) -> np.ndarray:
    """A 1 Hz int64 track from `start`: entry j is the label of second [j, j+1), -1 where there is none."""
    n = int(np.ceil(duration - 1e-9))
    track = np.full(n, -1, dtype=np.int64)
    idx = np.round(times - start).astype(np.int64)
    keep = (idx >= 0) & (idx < n)
    if (~keep).any():
        log.debug("%d label rows fall outside the recording and are ignored", int((~keep).sum()))
    track[idx[keep]] = labels[keep]
    return track


# ---------------------------------------------------------------------------------------------- public


def _normalise_ids(subjects: Iterable[str | int]) -> list[str]:
    out = []
    for s in subjects:
        if isinstance(s, (int, np.integer)):
            out.append(f"S{int(s):02d}")
        elif isinstance(s, str) and re.fullmatch(r"[sS]\d{1,2}", s.strip()):
            out.append(f"S{int(s.strip()[1:]):02d}")
        else:
            raise DataError(f"subject id {s!r} is not valid; use ids like 'S02' (or the number 2)")
    return out


def _resolve_root(root: str | Path | None) -> Path:
    return find_dataset_root(NAME, root, download=root is None)


def stress_predict_subjects(root: str | Path | None = None, require_labels: bool = True) -> list[str]:
    """Subject ids ("S02", ...) present in Raw_data/, only those with label rows when `require_labels`."""
    root = _resolve_root(root)
    ids = list(_subject_folders(root))
    if require_labels:
        labelled = _read_labels(root, use_cache=True)
        ids = [s for s in ids if s in labelled]
    return ids


def load_stress_predict(
    root: str | Path | None,
    subjects: Sequence[str | int] | None = None,
    *,
    require_labels: bool = True,
    use_cache: bool = True,
) -> list[Recording]:
    """Load Stress-Predict recordings (one per subject), each modality float32 [C, L] at its native rate.

    `root` is the stress-predict folder or a folder containing it (None: CROSSL_EDGE_DATA, the cache,
    then a download). `subjects` selects ids like "S02" (default: all). With `require_labels` (default)
    subjects without label rows (S01) are skipped and logged; without it they come with `labels=None`.
    Class names are CLASS_NAMES = ("rest", "stress").
    """
    root = _resolve_root(root)
    folders = _subject_folders(root)
    ids = list(folders) if subjects is None else _normalise_ids(subjects)
    unknown = [s for s in ids if s not in folders]
    if unknown:
        raise DataError(f"unknown stress-predict subjects {unknown}; present: {', '.join(folders)}")
    labels = _read_labels(root, use_cache)
    cache_dir = parsed_cache_dir(NAME, root)
    recordings: list[Recording] = []
    skipped: list[str] = []
    hits = 0
    for sid in ids:
        if sid not in labels and require_labels:
            skipped.append(sid)
            continue
        folder = folders[sid]
        paths = [folder / f"{stem}.csv" for stem, *_ in _SOURCES]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{folder} lacks {missing}; each subject needs ACC, BVP, EDA and TEMP .csv files")
        key = files_key(paths)
        arrays = load_cached(cache_dir / f"{sid}.npz", key) if use_cache else None
        if arrays is None:
            arrays = _parse_subject(folder)
            if use_cache:
                save_cached(cache_dir / f"{sid}.npz", key, arrays)
        else:
            hits += 1
        start = float(arrays["start"])
        signals = {name: arrays[name] for _, name, *_ in _SOURCES}
        rates = {name: rate for _, name, _, rate, _ in _SOURCES}
        duration = min(sig.shape[1] / rates[n] for n, sig in signals.items())
        track = _label_track(*labels[sid], start=start, duration=duration) if sid in labels else None
        rec = Recording(
            subject=sid,
            signals=signals,
            rates=rates,
            labels=track,
            label_rate=LABEL_RATE,
            group=_dt.datetime.fromtimestamp(start, tz=_dt.timezone.utc).date().isoformat(),
            meta={"start_unix": start, "source": str(folder)},
        )
        rec.check()
        recordings.append(rec)
    if skipped:
        log.info(
            "stress-predict: skipped %s (no rows in the label file; pass require_labels=False to keep them)", skipped
        )
    log.info("stress-predict: loaded %d subjects from %s (%d from the parse cache)", len(recordings), root, hits)
    return recordings
