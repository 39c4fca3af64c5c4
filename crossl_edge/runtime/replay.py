"""Replay a real recording as a live stream: chunks of samples with timestamps, and the true label at any time.

Sources are named `replay:<dataset>:<subject or group>`, e.g. `replay:stress-predict:S04` or
`replay:lis-emg-imu:2020-07-09`. Several recordings of one key play back to back, each after a pause; the
first chunk of each says so (`Chunk.first`), and the caller restarts the streaming classifier there
(`StreamingClassifier.restart`), so each recording is a new stream whose predictions start with its first full
window, whatever the hop (a recording exactly one window long gets exactly one prediction).
numpy only: this runs on the device.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from crossl_edge.data.types import DataError, Recording
from crossl_edge.data.windowing import window_labels
from crossl_edge.runtime.bundle import BundleError, Manifest

PAUSE_S = 5.0  # silence between two recordings of one source


def parse_source(text: str) -> tuple[str, str]:
    """'replay:<dataset>:<key>' -> (dataset, key)."""
    parts = text.split(":", 2)
    if len(parts) != 3 or parts[0] != "replay" or not parts[1] or not parts[2]:
        raise ValueError(f"source {text!r}: expected replay:<dataset>:<subject>, e.g. replay:stress-predict:S04")
    return parts[1], parts[2]


def load_recordings(dataset: str, key: str, data_root: str | Path | None = None) -> tuple[list[Recording], tuple[str, ...]]:
    """The recordings of subject (or group) `key` of a data set, and the data set's class names."""
    from crossl_edge.data import DATASETS, find_dataset_root, load_byo

    if dataset not in DATASETS:
        raise DataError(f"unknown data set {dataset!r}; valid: {', '.join(DATASETS)}")
    info = DATASETS[dataset]
    folder = find_dataset_root(dataset, data_root, download=dataset != "byo")
    if dataset == "byo":
        recs, _, classes = load_byo(folder)
    else:
        classes = info.class_names
        params = inspect.signature(info.loader).parameters
        if "subjects" in params:
            try:
                recs = info.loader(folder, subjects=[key], require_labels=False) if "require_labels" in params \
                    else info.loader(folder, subjects=[key])
            except DataError:
                recs = info.loader(folder)  # the key may be a group, not a subject
        else:
            recs = info.loader(folder)
    chosen = [r for r in recs if key in (r.subject, r.group)]
    if not chosen:
        subjects = sorted({r.subject for r in recs})
        groups = sorted({r.group for r in recs} - {""})
        raise DataError(
            f"no recording of {key!r} in {dataset}; subjects: {', '.join(subjects[:40])}"
            + (f"; groups: {', '.join(groups[:40])}" if groups else "")
        )
    return chosen, tuple(classes)


def held_out_windows(manifest: Manifest, n: int, data_root: str | Path | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Up to `n` windows (every modality, raw units, [n, C, T] each, at the bundle's hop) of the held-out
    subjects the manifest names, spread evenly over each subject's recordings so every subject is represented,
    and their labels (-1 where unlabelled). Raises DataError when the data set or the subjects are not here."""
    from crossl_edge.data.windowing import make_windows

    source = manifest.raw.get("source", {})
    dataset, subjects = source.get("dataset"), source.get("test_subjects") or []
    if not dataset or not subjects:
        raise DataError(f"bundle {manifest.name!r} names no data set or held-out subjects to take windows from")
    per = max(1, -(-n // len(subjects)))
    x: dict[str, list[np.ndarray]] = {s.name: [] for s in manifest.specs}
    y: list[np.ndarray] = []
    for subject in subjects:
        recs, classes = load_recordings(dataset, subject, data_root)
        ws = make_windows(recs, manifest.specs, manifest.window_s, manifest.hop_s, classes, skip_short=True)
        pick = np.linspace(0, len(ws.y) - 1, min(per, len(ws.y))).astype(int) if len(ws.y) else []
        for name in x:
            x[name].append(ws.x[name][pick])
        y.append(ws.y[pick])
    out = {name: np.ascontiguousarray(np.concatenate(v)[:n], dtype=np.float32) for name, v in x.items()}
    return out, np.concatenate(y)[:n]


@dataclass
class Chunk:
    t_end: float  # stream time this chunk reaches
    pushes: list[tuple[str, np.ndarray, float]]  # (modality, samples [n, C], time of the first sample)
    recording: int = 0  # index of the recording it belongs to
    first: bool = False  # the first chunk of that recording (a new stream begins here)


class ReplaySource:
    """Recordings laid end to end on one stream clock starting at 0, checked against a bundle's modalities."""

    def __init__(self, recordings: list[Recording], class_names: tuple[str, ...], manifest: Manifest) -> None:
        self.manifest = manifest
        self.recordings = recordings
        for s in manifest.specs:
            for r in recordings:
                sig = r.signals.get(s.name)
                if sig is None:
                    raise BundleError(f"the recording of {r.subject} has no {s.name!r}, which the bundle needs "
                                      f"(it has {', '.join(r.signals)})")
                if sig.shape[0] != s.channels or abs(r.rates[s.name] - s.sample_rate) > 1e-9:
                    raise BundleError(f"{s.name}: the recording has {sig.shape[0]} channels at {r.rates[s.name]} Hz, the "
                                      f"bundle takes {s.channels} at {s.sample_rate} Hz")
        # map the data set's label indices onto the bundle's classes (by name)
        self.label_map = np.array([manifest.class_names.index(c) if c in manifest.class_names else -1 for c in class_names])
        self.offsets, t = [], 0.0
        for r in recordings:
            self.offsets.append(t)
            t += r.duration() + PAUSE_S
        self.duration = t - PAUSE_S

    def chunks(self, chunk_s: float = 0.25) -> Iterator[Chunk]:
        """Every modality's samples in time order, `chunk_s` seconds at a time."""
        for i, (r, off) in enumerate(zip(self.recordings, self.offsets)):
            dur = r.duration()
            for k in range(int(np.ceil(dur / chunk_s))):
                a, b = k * chunk_s, min((k + 1) * chunk_s, dur)
                pushes = []
                for s in self.manifest.specs:
                    i0, i1 = int(np.ceil(a * s.sample_rate - 1e-9)), int(np.ceil(b * s.sample_rate - 1e-9))
                    if i1 > i0:
                        pushes.append((s.name, r.signals[s.name][:, i0:i1].T, off + i0 / s.sample_rate))
                yield Chunk(off + b, pushes, i, first=k == 0)

    def label_at(self, t: float) -> int:
        """The bundle's class index of the window ending at stream time t (-1: unlabelled, mixed or a pause)."""
        for r, off in zip(self.recordings, self.offsets):
            start = t - self.manifest.window_s - off
            if r.labels is not None and -1e-6 <= start and t - off <= r.duration() + 1e-6:
                y = int(window_labels(r.labels, r.label_rate, np.array([max(start, 0.0)]), self.manifest.window_s,
                                      len(self.label_map))[0])
                return int(self.label_map[y]) if y >= 0 else -1
        return -1


@dataclass
class Outage:
    """A modality taken away between two stream times: 'disconnect' (the bridge says so) or 'stall' (samples
    just stop, and the runtime notices after its absent-after time)."""

    modality: str
    start: float
    stop: float
    kind: str = "disconnect"

    @classmethod
    def parse(cls, text: str, kind: str) -> "Outage":
        """'eda@60:120' -> eda away from 60 s to 120 s."""
        try:
            name, span = text.split("@")
            a, b = (float(v) for v in span.split(":"))
        except ValueError:
            raise ValueError(f"{text!r}: expected <modality>@<start s>:<stop s>, e.g. eda@60:120") from None
        if not b > a >= 0:
            raise ValueError(f"{text!r}: need 0 <= start < stop")
        return cls(name, a, b, kind)

    def covers(self, name: str, t: float) -> bool:
        return name == self.modality and self.start <= t < self.stop
