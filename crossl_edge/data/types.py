"""Containers that flow between loaders, windowing, splits and training (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crossl_edge.spec import ModalitySpec, check_specs


class DataError(ValueError):
    """A data set, file or recording is missing, malformed or unusable; the message says what to do."""


@dataclass
class Recording:
    """One continuous recording of one subject, every modality at its native rate.

    signals[name] is float32 [C, L_name]; sample 0 of every modality is at time 0 of the recording
    (loaders align the modalities' start times). labels is an int64 track at `label_rate` Hz from
    time 0, -1 where unlabelled; None for an unlabelled recording.
    """

    subject: str
    signals: dict[str, np.ndarray]
    rates: dict[str, float]
    labels: np.ndarray | None = None
    label_rate: float = 1.0
    group: str = ""  # e.g. the recording day; used by leave-one-group-out splits
    meta: dict = field(default_factory=dict)

    def duration(self) -> float:
        """Seconds covered by every modality (the shortest one)."""
        return min(sig.shape[1] / self.rates[name] for name, sig in self.signals.items())

    def check(self) -> None:
        """Raise DataError unless the fields hold what the docstring promises.

        Loaders call this before handing a recording on, so a malformed one fails where it was made,
        not deep inside windowing or training.
        """
        who = f"recording of subject {self.subject!r}"
        if not self.signals:
            raise DataError(f"{who} has no signals")
        for name, sig in self.signals.items():
            if not isinstance(sig, np.ndarray) or sig.ndim != 2:
                got = getattr(sig, "shape", type(sig))
                raise DataError(f"{who}: signal {name!r} must be a 2-D array [C, L], got {got}")
            if name not in self.rates:
                raise DataError(f"{who}: signal {name!r} has no sample rate in `rates`")
            rate = self.rates[name]
            if not (isinstance(rate, (int, float, np.floating, np.integer)) and np.isfinite(rate) and rate > 0):
                raise DataError(f"{who}: signal {name!r} has sample rate {rate!r}; it must be a positive number of Hz")
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
                raise DataError(
                    f"{who}: labels must be a 1-D integer track, got dtype {labels.dtype} shape {labels.shape}"
                )
            if labels.size and labels.min() < -1:
                raise DataError(
                    f"{who}: labels hold {int(labels.min())}; valid values are -1 (unlabelled) or a class index >= 0"
                )
            if not (np.isfinite(self.label_rate) and self.label_rate > 0):
                raise DataError(f"{who}: label_rate {self.label_rate!r} must be a positive number of Hz")


@dataclass
class WindowSet:
    """Windows cut from recordings: x[name] is float32 [N, C, T_name] at each modality's native rate."""

    specs: tuple[ModalitySpec, ...]
    x: dict[str, np.ndarray]
    y: np.ndarray  # int64 [N], -1 = unlabelled
    subject: np.ndarray  # str [N]
    group: np.ndarray  # str [N]
    t_start: np.ndarray  # float64 [N], seconds from the start of its recording
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        self.specs = check_specs(self.specs)
        n = len(self.y)
        for s in self.specs:
            if s.name not in self.x:
                raise DataError(f"WindowSet lacks modality {s.name!r}")
            shape = self.x[s.name].shape
            if shape != (n, s.channels, s.window):
                raise DataError(f"modality {s.name!r}: windows of shape {shape}, expected {(n, s.channels, s.window)}")
        for name in ("subject", "group", "t_start"):
            if len(getattr(self, name)) != n:
                raise DataError(f"WindowSet.{name} has {len(getattr(self, name))} entries for {n} windows")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def recording_ids(self) -> np.ndarray:
        """An id per window for the recording it was cut from. Loaders cut recordings one after another, each
        window starting later than the previous one, so a recording starts where the subject or group changes
        or the start time does not increase."""
        n = len(self)
        new = np.ones(n, dtype=bool)
        if n > 1:
            new[1:] = ((self.subject[1:] != self.subject[:-1]) | (self.group[1:] != self.group[:-1])
                       | (self.t_start[1:] <= self.t_start[:-1]))
        return np.cumsum(new) - 1

    def subset(self, index: np.ndarray) -> "WindowSet":
        """The windows at `index` (integer indices or a boolean mask)."""
        index = np.asarray(index)
        return WindowSet(
            specs=self.specs,
            x={k: v[index] for k, v in self.x.items()},
            y=self.y[index],
            subject=self.subject[index],
            group=self.group[index],
            t_start=self.t_start[index],
            class_names=self.class_names,
        )
