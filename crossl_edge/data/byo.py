"""Bring-your-own data: train on your own sensors by writing files, not a loader.

A BYO data set is a folder:

    my_data/
      dataset.json          {"modalities": [<ModalitySpec dict>, ...], "class_names": ["rest", "walk", ...],
                             "window_s": 2.0, "hop_s": 1.0}      (window_s and hop_s are optional defaults)
      <anything>.npz        one file per continuous recording, with these arrays:
        <modality>            float [C, L] (or [L] for one channel), for every modality in dataset.json
        <modality>__rate      scalar, Hz; must equal that modality's sample_rate in dataset.json
        labels                optional int [K]: class index per label step, -1 = unlabelled
        labels__rate          Hz of `labels` (required with labels); entry j covers [j, j+1) / labels__rate s
        subject               optional string scalar (default: the file name without .npz)
        group                 optional string scalar, e.g. the recording day (default "")
        meta                  optional JSON string (a dict) kept in Recording.meta

A modality is {"name", "kind", "channels", "sample_rate", "units", "channel_names"} (units and channel_names
optional). Any other key is refused, naming it and the known ones: a "window" there would be silently
overridden, since the window length is one for all modalities, `window_s` in seconds. Sample 0 of every modality is time 0: align your
streams before saving. Every modality keeps its own rate; nothing is resampled. NaN/inf are refused (cut
the recording at a dropout instead). An empty class_names list means an unlabelled data set
(pretraining only).

`save_byo_recording` and `save_byo_dataset` write this format; the sensor bridge uses the same format
to record on a device, so a recording made there loads here unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from crossl_edge.data.types import DataError, Recording
from crossl_edge.spec import ModalitySpec, SpecError

log = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"
_RATE = "__rate"
_OPTIONAL = ("labels", "labels" + _RATE, "subject", "group", "meta")
#: the keys of dataset.json, and of one of its modalities (a ModalitySpec less its window: window_s sets it)
DATASET_KEYS = ("modalities", "class_names", "window_s", "hop_s")
MODALITY_KEYS = ("name", "kind", "channels", "sample_rate", "units", "channel_names")


@dataclass(frozen=True)
class ByoConfig:
    """The content of dataset.json. Spec windows are a 1-sample placeholder unless window_s is given."""

    specs: tuple[ModalitySpec, ...]
    class_names: tuple[str, ...]
    window_s: float | None = None
    hop_s: float | None = None


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def read_byo_config(folder: str | Path) -> ByoConfig:
    """Parse and validate `<folder>/dataset.json`."""
    path = Path(folder) / DATASET_JSON
    if not path.is_file():
        raise DataError(f"{path} is missing: a BYO folder needs a dataset.json with 'modalities' and 'class_names'")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(d, dict):
        raise DataError(f"{path} must hold a JSON object")
    unknown = set(d) - set(DATASET_KEYS)
    if unknown:
        raise DataError(f"{path}: unknown keys {sorted(unknown)}; the known keys are {', '.join(DATASET_KEYS)}")
    mods = d.get("modalities")
    if not isinstance(mods, list) or not mods:
        raise DataError(f"{path}: 'modalities' must be a non-empty list of ModalitySpec dicts")
    class_names = d.get("class_names", [])
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise DataError(f"{path}: 'class_names' must be a list of strings (empty for an unlabelled data set)")
    if len(set(class_names)) != len(class_names):
        raise DataError(f"{path}: duplicate class names in {class_names}")
    window_s, hop_s = d.get("window_s"), d.get("hop_s")
    for key, value in (("window_s", window_s), ("hop_s", hop_s)):
        if value is not None and not _positive(value):
            raise DataError(f"{path}: {key} must be a positive number of seconds, got {value!r}")
    specs = []
    for i, m in enumerate(mods):
        if not isinstance(m, dict):
            raise DataError(f"{path}: modalities[{i}] must be an object, got {m!r}")
        unknown = set(m) - set(MODALITY_KEYS)
        if unknown:
            hint = (" (the window length is dataset.json's window_s, in seconds, the same for every modality)"
                    if "window" in unknown else "")
            raise DataError(f"{path}: modalities[{i}] ({m.get('name', '?')!r}) has unknown keys {sorted(unknown)}{hint}; "
                            f"the known keys of a modality are {', '.join(MODALITY_KEYS)}")
        try:
            spec = ModalitySpec.from_dict({**m, "window": 1})
            if window_s is not None:
                spec = spec.with_window_seconds(window_s)
        except (SpecError, TypeError) as e:
            raise DataError(f"{path}: modalities[{i}] is not a valid ModalitySpec: {e}") from e
        specs.append(spec)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate modality names in {names}")
    return ByoConfig(tuple(specs), tuple(class_names), window_s, hop_s)


def _scalar_str(z: Any, key: str, path: Path) -> str:
    a = z[key]
    if a.ndim != 0 or a.dtype.kind not in "US":
        raise DataError(f"{path}: {key!r} must be a string scalar, got dtype {a.dtype} shape {a.shape}")
    return str(a)


def _read_recording(path: Path, config: ByoConfig) -> Recording:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from e
    with z:
        keys = set(z.files)
        allowed = {s.name for s in config.specs} | {s.name + _RATE for s in config.specs} | set(_OPTIONAL)
        unknown = keys - allowed
        if unknown:
            raise DataError(f"{path}: unknown arrays {sorted(unknown)}; allowed: {sorted(allowed)}")
        signals: dict[str, np.ndarray] = {}
        rates: dict[str, float] = {}
        for s in config.specs:
            if s.name not in keys:
                listed = [x.name for x in config.specs]
                raise DataError(f"{path}: missing modality {s.name!r} (dataset.json lists {listed})")
            if s.name + _RATE not in keys:
                raise DataError(f"{path}: missing {s.name + _RATE!r}, the sample rate of {s.name!r} in Hz")
            sig = z[s.name]
            if sig.dtype.kind not in "fiu":
                raise DataError(f"{path}: {s.name!r} has dtype {sig.dtype}; it must be numeric")
            if sig.ndim == 1:
                sig = sig[None, :]
            if sig.ndim != 2 or sig.shape[1] < 1:
                raise DataError(
                    f"{path}: {s.name!r} has shape {z[s.name].shape}; expected [C, L] (or [L] for one channel)"
                )
            if sig.shape[0] != s.channels:
                raise DataError(f"{path}: {s.name!r} has {sig.shape[0]} channels, dataset.json says {s.channels}")
            sig = sig.astype(np.float32)
            bad = ~np.isfinite(sig)
            if bad.any():
                first = int(np.argwhere(bad)[0][1])
                raise DataError(
                    f"{path}: {s.name!r} holds {int(bad.sum())} NaN/inf values (first at sample {first}); "
                    "cut the recording at the gap or fill it before saving"
                )
            rate_arr = z[s.name + _RATE]
            if rate_arr.size != 1 or rate_arr.dtype.kind not in "fiu":
                raise DataError(f"{path}: {s.name + _RATE!r} must be a numeric scalar (Hz)")
            rate = float(rate_arr.reshape(()))
            if not (math.isfinite(rate) and abs(rate - s.sample_rate) <= 1e-6 * s.sample_rate):
                raise DataError(f"{path}: {s.name!r} is at {rate:g} Hz but dataset.json says {s.sample_rate:g} Hz")
            signals[s.name], rates[s.name] = sig, s.sample_rate
        labels, label_rate = None, 1.0
        if "labels" in keys:
            labels = z["labels"]
            if labels.ndim != 1 or labels.dtype.kind not in "iu":
                raise DataError(
                    f"{path}: 'labels' must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}"
                )
            labels = labels.astype(np.int64)
            if labels.size and (labels.min() < -1 or labels.max() >= len(config.class_names)):
                raise DataError(
                    f"{path}: labels range {int(labels.min())}..{int(labels.max())}; valid are -1 (unlabelled) and "
                    f"0..{len(config.class_names) - 1} for class_names {list(config.class_names)}"
                )
            if "labels" + _RATE not in keys:
                raise DataError(f"{path}: 'labels' needs 'labels__rate' (Hz of the label track)")
            label_rate = float(z["labels" + _RATE].reshape(()))
            if not (math.isfinite(label_rate) and label_rate > 0):
                raise DataError(f"{path}: labels__rate must be a positive number of Hz, got {label_rate}")
        elif "labels" + _RATE in keys:
            raise DataError(f"{path}: 'labels__rate' without 'labels'")
        subject = _scalar_str(z, "subject", path) if "subject" in keys else path.stem
        group = _scalar_str(z, "group", path) if "group" in keys else ""
        meta: dict = {}
        if "meta" in keys:
            try:
                meta = json.loads(_scalar_str(z, "meta", path))
            except ValueError as e:
                raise DataError(f"{path}: 'meta' is not valid JSON: {e}") from e
            if not isinstance(meta, dict):
                raise DataError(f"{path}: 'meta' must be a JSON object")
    meta.setdefault("file", path.name)
    rec = Recording(subject=subject, signals=signals, rates=rates, labels=labels, label_rate=label_rate,
                    group=group, meta=meta)
    rec.check()
    return rec


def load_byo(folder: str | Path) -> tuple[list[Recording], tuple[ModalitySpec, ...], tuple[str, ...]]:
    """(recordings in file-name order, spec templates, class names) of a BYO folder; see the module docstring.

    Spec windows are placeholders unless dataset.json gives window_s: `make_windows` sets them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"BYO folder {folder} does not exist; pass the folder holding dataset.json and the .npz files")
    config = read_byo_config(folder)
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise DataError(f"{folder} holds no .npz recordings (one file per recording, see crossl_edge.data.byo)")
    recordings = [_read_recording(p, config) for p in files]
    log.info("byo: loaded %d recordings from %s", len(recordings), folder)
    return recordings, config.specs, config.class_names


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_byo_recording(path: str | Path, recording: Recording) -> Path:
    """Write `recording` as one BYO .npz file at `path` (which must end in .npz); returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise DataError(f"BYO recordings are .npz files; {path} does not end in .npz")
    recording.check()
    arrays: dict[str, np.ndarray] = {}
    for name, sig in recording.signals.items():
        if name in _OPTIONAL or name.endswith(_RATE):
            raise DataError(f"modality name {name!r} collides with a reserved BYO array name")
        arrays[name] = np.asarray(sig, dtype=np.float32)
        arrays[name + _RATE] = np.array(float(recording.rates[name]))
    if recording.labels is not None:
        arrays["labels"] = np.asarray(recording.labels, dtype=np.int64)
        arrays["labels" + _RATE] = np.array(float(recording.label_rate))
    arrays["subject"] = np.array(str(recording.subject))
    arrays["group"] = np.array(str(recording.group))
    if recording.meta:
        try:
            arrays["meta"] = np.array(json.dumps(recording.meta))
        except TypeError as e:
            raise DataError(f"recording meta must be JSON-serialisable to be saved: {e}") from e
    _atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def save_byo_dataset(
    folder: str | Path,
    specs: Sequence[ModalitySpec],
    class_names: Sequence[str],
    window_s: float | None = None,
    hop_s: float | None = None,
) -> Path:
    """Write `<folder>/dataset.json` for `specs` and `class_names`; returns its path."""
    d: dict[str, Any] = {
        "modalities": [{k: v for k, v in s.to_dict().items() if k != "window"} for s in specs],
        "class_names": list(class_names),
    }
    if window_s is not None:
        d["window_s"] = window_s
    if hop_s is not None:
        d["hop_s"] = hop_s
    path = Path(folder) / DATASET_JSON
    text = json.dumps(d, indent=2) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    read_byo_config(folder)  # what was written must load
    return path
