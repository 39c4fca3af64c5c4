"""Record live streams to disk as a BYO data set (crossl_edge.data.byo): unlabelled data for CroSSL pretraining.

The folder gets a dataset.json listing the recorded streams (ModalitySpecs, no classes) and one .npz per
stretch of time in which every stream was contiguous: a BYO recording needs every modality from its time 0
with no holes, so a disconnect or a lost sample ends a stretch and the next one starts a new file.
Stretches shorter than `min_s` are not written (they are too short to window) and their samples are
counted in `counters.dropped_short`. Memory stays bounded: `flush(upto)` writes what lies before `upto`
(the hub calls it every `rotate_s`). numpy only, so it runs on the device.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossl_edge.data.byo import save_byo_dataset, save_byo_recording
from crossl_edge.data.types import Recording
from crossl_edge.spec import ModalitySpec

log = logging.getLogger(__name__)


@dataclass
class _Segment:
    t0: float
    rate: float
    parts: list = field(default_factory=list)
    n: int = 0

    @property
    def t_end(self) -> float:
        return self.t0 + self.n / self.rate

    def data(self) -> np.ndarray:
        """All samples as one array (the chunks are joined once, then kept joined)."""
        if len(self.parts) != 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0]

    def take(self, a: float, n: int) -> np.ndarray:
        """n samples from the one nearest time a."""
        i = max(int(round((a - self.t0) * self.rate)), 0)
        return self.data()[i:i + n]

    def trim(self, t: float) -> None:
        i = int(round((t - self.t0) * self.rate))
        if i <= 0:
            return
        x = self.data()[i:]
        self.parts, self.n, self.t0 = [x], len(x), self.t0 + i / self.rate


@dataclass
class RecorderCounters:
    files: int = 0
    samples_written: int = 0
    dropped_short: int = 0


class Recorder:
    def __init__(self, folder: str | Path, specs: list[ModalitySpec], min_s: float = 10.0, subject: str = "live",
                 tolerance_s: float = 0.005) -> None:
        self.folder = Path(folder)
        self.specs = {s.name: s for s in specs}
        # a chunk further than this (or 1.5 sample periods) from where its stream ended starts a new stretch
        self.min_s, self.subject, self.tolerance_s = min_s, subject, tolerance_s
        self.segments: dict[str, list[_Segment]] = {s.name: [] for s in specs}
        self.counters = RecorderCounters()
        self.stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        save_byo_dataset(self.folder, specs, [])

    def push(self, name: str, x: np.ndarray, t0: float) -> None:
        spec = self.specs.get(name)
        if spec is None or len(x) == 0:
            return
        segs = self.segments[name]
        last = segs[-1] if segs else None
        if last is None or abs(t0 - last.t_end) > max(self.tolerance_s, 1.5 / spec.sample_rate):
            last = _Segment(t0, spec.sample_rate)
            segs.append(last)
        last.parts.append(np.asarray(x, np.float32))
        last.n += len(x)

    def _spans(self, upto: float) -> list[tuple[float, float]]:
        """Time spans before `upto` where every stream has one segment covering it."""
        spans = [(-math.inf, upto)]
        for segs in self.segments.values():
            spans = [(max(a, s.t0), min(b, s.t_end)) for a, b in spans for s in segs
                     if max(a, s.t0) < min(b, s.t_end)]
        return spans

    def flush(self, upto: float = math.inf) -> list[Path]:
        written, n_written = [], 0
        held = sum(s.n for segs in self.segments.values() for s in segs)
        rates = {name: self.specs[name].sample_rate for name in self.segments}
        for a, b in self._spans(upto):
            if b - a < self.min_s:
                continue
            # one duration that is a whole number of samples of every stream, so they end together
            duration = min(math.floor((b - a) * r + 1e-6) / r for r in rates.values())
            signals = {}
            for name, segs in self.segments.items():
                seg = next(s for s in segs if s.t0 <= a + 1e-9 and s.t_end >= b - 1e-9)
                signals[name] = seg.take(a, int(round(duration * rates[name]))).T.copy()
            rec = Recording(self.subject, signals, rates, meta={"host_t0": a, "duration_s": duration})
            path = self.folder / f"{self.subject}-{self.stamp}-{self.counters.files:04d}.npz"
            save_byo_recording(path, rec)
            self.counters.files += 1
            n_written += sum(v.shape[1] for v in signals.values())
            written.append(path)
            log.info("recorded %.1f s of %s to %s", duration, ", ".join(signals), path)
        # forget what lies before upto (written, or too short / not covered by every stream)
        for name, segs in self.segments.items():
            keep = []
            for s in segs:
                if s.t_end <= upto:
                    continue
                if s.t0 < upto:
                    s.trim(upto)
                keep.append(s)
            self.segments[name] = keep
        kept = sum(s.n for segs in self.segments.values() for s in segs)
        self.counters.samples_written += n_written
        self.counters.dropped_short += held - kept - n_written
        return written
