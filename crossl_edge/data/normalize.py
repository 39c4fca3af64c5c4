"""Per-modality, per-channel standardisation statistics, fitted on training windows only.

The statistics travel with a trained model (the edge bundle's manifest stores `to_dict()`), so the
runtime standardises live windows exactly as training did. Fitting on validation or test windows would
leak their distribution into training; fit on `windowset.subset(train_idx)`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossl_edge.data.types import DataError, WindowSet

log = logging.getLogger(__name__)

#: A channel whose std is below this is divided by this instead (a flat channel stays finite).
STD_FLOOR = 1e-6


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Mean and (population) std per channel of x [N, C, T], in float64, chunked to bound memory."""
    n, c, t = x.shape
    if n == 0:
        raise DataError("cannot fit normalisation statistics on zero windows")
    shift = x[0].mean(axis=1, dtype=np.float64)  # [C] shifting first keeps the variance sum stable
    s1 = np.zeros(c)
    s2 = np.zeros(c)
    for i in range(0, n, chunk):
        d = x[i : i + chunk].astype(np.float64) - shift[None, :, None]  # [n', C, T]
        s1 += d.sum(axis=(0, 2))
        s2 += np.square(d).sum(axis=(0, 2))
    count = n * t
    mean_d = s1 / count
    var = np.maximum(s2 / count - mean_d**2, 0.0)
    return (shift + mean_d).tolist(), np.sqrt(var).tolist()


@dataclass
class NormStats:
    """mean[name] and std[name] are per-channel lists of floats (length = that modality's channels)."""

    mean: dict[str, list[float]]
    std: dict[str, list[float]]

    def __post_init__(self) -> None:
        if set(self.mean) != set(self.std):
            raise DataError(f"NormStats: mean has modalities {sorted(self.mean)} but std has {sorted(self.std)}")
        for name in self.mean:
            m, s = self.mean[name], self.std[name]
            if len(m) != len(s) or not m:
                raise DataError(f"NormStats[{name!r}]: {len(m)} means and {len(s)} stds; need one of each per channel")
            if not all(math.isfinite(v) for v in (*m, *s)) or min(s) < 0:
                raise DataError(f"NormStats[{name!r}]: means and stds must be finite and stds >= 0")

    @classmethod
    def fit(cls, windowset: WindowSet, index: np.ndarray | None = None) -> "NormStats":
        """Statistics over every window (or the windows at `index`) and time step, per modality and channel.

        Pass only training windows: `NormStats.fit(ws, train_idx)` or `NormStats.fit(ws.subset(train_idx))`.
        """
        mean: dict[str, list[float]] = {}
        std: dict[str, list[float]] = {}
        for s in windowset.specs:
            x = windowset.x[s.name] if index is None else windowset.x[s.name][np.asarray(index)]
            mean[s.name], std[s.name] = _channel_stats(x)
        return cls(mean=mean, std=std)

    def check(self, windowset: WindowSet) -> None:
        """Raise DataError unless every modality of `windowset` has statistics with its channel count.

        Statistics for extra modalities are allowed (a window set with a sensor missing uses a subset).
        """
        for s in windowset.specs:
            if s.name not in self.mean:
                raise DataError(
                    f"normalisation statistics lack modality {s.name!r} (they cover {sorted(self.mean)}); "
                    "fit them on data with the same modalities"
                )
            if len(self.mean[s.name]) != s.channels:
                raise DataError(
                    f"normalisation statistics for {s.name!r} have {len(self.mean[s.name])} channels, "
                    f"the data has {s.channels}"
                )

    def apply(self, windowset: WindowSet) -> WindowSet:
        """A new WindowSet with x = (x - mean) / max(std, 1e-6) per channel, float32; the input is unchanged."""
        self.check(windowset)
        x = {}
        for s in windowset.specs:
            mean = np.asarray(self.mean[s.name], dtype=np.float32)[None, :, None]  # [1, C, 1]
            std = np.maximum(np.asarray(self.std[s.name], dtype=np.float32), STD_FLOOR)[None, :, None]
            x[s.name] = ((windowset.x[s.name] - mean) / std).astype(np.float32, copy=False)
        return WindowSet(
            specs=windowset.specs,
            x=x,
            y=windowset.y,
            subject=windowset.subject,
            group=windowset.group,
            t_start=windowset.t_start,
            class_names=windowset.class_names,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready {"mean": {name: [...]}, "std": {name: [...]}}."""
        return {"mean": {k: list(map(float, v)) for k, v in self.mean.items()},
                "std": {k: list(map(float, v)) for k, v in self.std.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NormStats":
        if not isinstance(d, dict) or set(d) != {"mean", "std"}:
            raise DataError(f"normalisation statistics must be a dict with keys 'mean' and 'std', got {d!r:.200}")
        try:
            mean = {str(k): [float(v) for v in vs] for k, vs in d["mean"].items()}
            std = {str(k): [float(v) for v in vs] for k, vs in d["std"].items()}
        except (AttributeError, TypeError, ValueError) as e:
            raise DataError(f"normalisation statistics are malformed: {e}") from e
        return cls(mean=mean, std=std)


#: Under session normalisation a channel's running std is floored at this fraction of its training std, so the
#: first seconds of a session (a near-flat temperature window) do not blow up to huge z-scores.
SESSION_STD_FLOOR = 0.1


class RunningChannelStats:
    """Per-channel mean and std of everything a session has streamed so far, each sample counted once.

    The same object serves training data (`session_normalize`) and the torch-free runtime, so training and the
    device standardise alike. Sums are float64 and shifted by the first sample for a stable variance."""

    def __init__(self, channels: int) -> None:
        self.count = 0
        self.shift = np.zeros(channels)
        self.s1 = np.zeros(channels)
        self.s2 = np.zeros(channels)

    def update(self, samples: np.ndarray) -> None:
        """Add samples [n, C]."""
        if len(samples) == 0:
            return
        if self.count == 0:
            self.shift = samples[0].astype(np.float64)
        d = samples.astype(np.float64) - self.shift
        self.s1 += d.sum(0)
        self.s2 += np.square(d).sum(0)
        self.count += len(samples)

    def mean_std(self, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean [C], std [C]) with std >= floor; before any sample, (0, floor)."""
        if self.count == 0:
            return np.zeros_like(self.s1), np.asarray(floor, dtype=np.float64)
        m = self.s1 / self.count
        var = np.maximum(self.s2 / self.count - m * m, 0.0)
        return self.shift + m, np.maximum(np.sqrt(var), floor)


def session_std_floor(training_std, fraction: float = SESSION_STD_FLOOR) -> np.ndarray:
    """The floor of a channel's running std: `fraction` of its training std (and never below STD_FLOOR)."""
    return np.maximum(fraction * np.asarray(training_std, dtype=np.float64), STD_FLOOR)


def session_running_stats(
    windowset: WindowSet, sessions: np.ndarray, norm: NormStats, floor_fraction: float = SESSION_STD_FLOOR
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{modality: (mean [N, C], std [N, C])}: for every window, the running per-channel statistics of its own
    session over all samples up to the window's end, as the runtime keeps them live (`StreamingClassifier` of a
    bundle trained with session normalisation). Windows are taken in data order, which loaders keep in time
    order; a window overlapping its predecessor in the same recording adds only its new samples. `norm`
    (training statistics) only sets the std floor (`floor_fraction` of the training std)."""
    norm.check(windowset)
    sessions = np.asarray(sessions)
    if len(sessions) != len(windowset):
        raise DataError(f"{len(sessions)} session ids for {len(windowset)} windows")
    out = {s.name: (np.empty((len(windowset), s.channels)), np.empty((len(windowset), s.channels)))
           for s in windowset.specs}
    t = windowset.t_start
    rec = windowset.recording_ids()
    for session in np.unique(sessions):
        idx = np.flatnonzero(sessions == session)
        for s in windowset.specs:
            stats = RunningChannelStats(s.channels)
            floor = session_std_floor(norm.std[s.name], floor_fraction)
            seconds = s.window / s.sample_rate
            prev = None  # (recording, end time) of the previous window of the session
            for i in idx:
                w = windowset.x[s.name][i]  # [C, T]
                end = t[i] + seconds
                new = s.window
                if prev is not None and prev[0] == rec[i] and t[i] < prev[1]:  # overlaps the previous window
                    new = min(s.window, max(0, int(round((end - prev[1]) * s.sample_rate))))
                stats.update(w[:, s.window - new:].T)
                prev = (rec[i], end)
                out[s.name][0][i], out[s.name][1][i] = stats.mean_std(floor)
    return out


def session_normalize(windowset: WindowSet, sessions: np.ndarray, norm: NormStats) -> WindowSet:
    """Per-user adaptation without labels: every window standardised per channel with the running statistics of
    its own session (a user, a recording day) up to the window's end (`session_running_stats`)."""
    stats = session_running_stats(windowset, sessions, norm)
    x = {}
    for s in windowset.specs:
        mean, std = stats[s.name]
        x[s.name] = ((windowset.x[s.name] - mean[:, :, None]) / std[:, :, None]).astype(np.float32)
    return WindowSet(specs=windowset.specs, x=x, y=windowset.y, subject=windowset.subject, group=windowset.group,
                     t_start=windowset.t_start, class_names=windowset.class_names)
