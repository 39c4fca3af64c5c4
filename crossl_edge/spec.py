"""The one shared contract: what a modality is.

Data loaders, models, export, the runtime and the sensor bridge all read `ModalitySpec`.
A modality keeps its native sample rate; nothing resamples everything to one rate, so a
10-second window is 320 samples of 32 Hz ACC and 40 samples of 4 Hz EDA.

This module needs only the standard library: it is imported on the torch-free Pi path.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

#: Sensor kinds the project knows. A kind is informational (units, plots, simulators);
#: any kind works for learning. Unknown kinds are refused so typos surface early.
KINDS = ("imu", "acc", "gyro", "emg", "eda", "bvp", "ecg", "temp", "orientation", "other")


class SpecError(ValueError):
    """A ModalitySpec (or a list of them) is malformed."""


@dataclass(frozen=True)
class ModalitySpec:
    """One sensor modality as every part of the system sees it.

    `window` is the number of samples in one model window at `sample_rate` Hz.
    """

    name: str  # unique key, e.g. "acc"; used for file names and program names, so [a-z0-9_]
    kind: str  # one of KINDS
    channels: int  # C in the [C, T] window
    sample_rate: float  # native rate in Hz
    window: int  # T, samples per window at the native rate
    units: str = ""  # physical units of the values the loader produces, e.g. "g", "uS"
    channel_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c == "_" for c in self.name) or self.name != self.name.lower():
            raise SpecError(f"modality name {self.name!r} must be non-empty lower-case [a-z0-9_]")
        if self.kind not in KINDS:
            raise SpecError(f"modality {self.name!r}: unknown kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        if int(self.channels) != self.channels or self.channels < 1:
            raise SpecError(f"modality {self.name!r}: channels must be a positive integer, got {self.channels!r}")
        if not (self.sample_rate > 0 and math.isfinite(self.sample_rate)):
            raise SpecError(f"modality {self.name!r}: sample_rate must be a positive number, got {self.sample_rate!r}")
        if int(self.window) != self.window or self.window < 1:
            raise SpecError(f"modality {self.name!r}: window must be a positive integer, got {self.window!r}")
        if self.channel_names and len(self.channel_names) != self.channels:
            raise SpecError(
                f"modality {self.name!r}: {len(self.channel_names)} channel names for {self.channels} channels"
            )
        object.__setattr__(self, "channel_names", tuple(self.channel_names))

    @property
    def window_seconds(self) -> float:
        return self.window / self.sample_rate

    def with_window_seconds(self, seconds: float) -> "ModalitySpec":
        """The same modality with a window of `seconds` at its native rate (must be a whole number of samples)."""
        samples = seconds * self.sample_rate
        if abs(samples - round(samples)) > 1e-6 or round(samples) < 1:
            raise SpecError(
                f"modality {self.name!r}: {seconds} s at {self.sample_rate} Hz is not a whole number of samples"
            )
        return ModalitySpec(**{**asdict(self), "window": int(round(samples))})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_names"] = list(self.channel_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModalitySpec":
        known = {"name", "kind", "channels", "sample_rate", "window", "units", "channel_names"}
        unknown = set(d) - known
        if unknown:
            raise SpecError(f"unknown ModalitySpec fields {sorted(unknown)}; valid fields: {sorted(known)}")
        return cls(**{**d, "channel_names": tuple(d.get("channel_names", ()))})


def check_specs(specs: Iterable[ModalitySpec]) -> tuple[ModalitySpec, ...]:
    """Validate a list of modalities: non-empty, unique names, all describing the same window duration."""
    specs = tuple(specs)
    if not specs:
        raise SpecError("at least one modality is needed")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SpecError(f"duplicate modality names in {names}")
    durations = {round(s.window_seconds, 6) for s in specs}
    if len(durations) != 1:
        raise SpecError(
            "all modalities must cover the same window duration; got "
            + ", ".join(f"{s.name}={s.window_seconds:g}s" for s in specs)
        )
    return specs


def modality_subsets(names: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every non-empty subset of modality names, largest first, each in the modalities' own order."""
    out: list[tuple[str, ...]] = []
    for r in range(len(names), 0, -1):
        out += list(itertools.combinations(names, r))
    return out
