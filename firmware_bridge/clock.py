"""Per-device clock model: device timestamps -> host time, so samples from several devices line up.

A device stamps samples with its own clock (a counter that may wrap, run fast or slow by tens of ppm,
and, on some devices, jump backwards). The host sees each frame arrive at host time = true time + a
transport delay that is never negative and jittery. So the model keeps, for each second of device time,
only the frame that arrived fastest (the lower envelope: its delay is the smallest), fits
host = offset + rate * device to those over the last few minutes by least squares, and then lowers the
offset to the envelope itself. Jitter averages out over minutes of envelope points, where a fit to every
arrival would be dominated by it. Wraps are unwrapped; a backward
jump larger than the tolerance starts a new segment (counted), as does a jump forward past max_gap_s.
Pure Python + numpy, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class ClockCounters:
    points: int = 0
    wraps: int = 0
    backward_jumps: int = 0
    forward_jumps: int = 0


class ClockModel:
    def __init__(self, wrap_s: float | None = None, span_s: float = 300.0, bucket_s: float = 1.0,
                 max_gap_s: float = 30.0, backward_tolerance_s: float = 0.002) -> None:
        """wrap_s: period of the device counter in seconds (None: it never wraps); span_s: how much device time
        the fit looks back over; bucket_s: one envelope point per this much device time."""
        self.wrap_s = wrap_s
        self.bucket_s = bucket_s
        self.max_gap_s = max_gap_s
        self.backward_tolerance_s = backward_tolerance_s
        self.counters = ClockCounters()
        self._buckets: deque[list] = deque(maxlen=max(int(span_s / bucket_s), 2))  # [bucket, device, host]
        self._last_raw: float | None = None
        self._wrap_offset = 0.0
        self._last_device: float | None = None
        self._rate = 1.0
        self._offset: float | None = None

    def unwrap(self, raw: float) -> float:
        """Device time in seconds, continued across counter wraps."""
        if self.wrap_s and self._last_raw is not None and raw < self._last_raw - self.wrap_s / 2:
            self._wrap_offset += self.wrap_s
            self.counters.wraps += 1
        self._last_raw = raw
        return raw + self._wrap_offset

    def observe(self, device_raw: float, host_arrival: float) -> float:
        """Add one (device timestamp, host arrival time) pair; returns the unwrapped device time."""
        d = self.unwrap(device_raw)
        if self._last_device is not None:
            step = d - self._last_device
            if step < -self.backward_tolerance_s:
                self.counters.backward_jumps += 1
                self._restart()
            elif step > self.max_gap_s:
                self.counters.forward_jumps += 1
                self._restart()
        self._last_device = d
        self.counters.points += 1
        bucket = int(d // self.bucket_s)
        if self._buckets and self._buckets[-1][0] == bucket:
            last = self._buckets[-1]
            if host_arrival - d < last[2] - last[1]:  # faster than the bucket's best so far
                last[1], last[2] = d, host_arrival
        else:
            self._buckets.append([bucket, d, host_arrival])
        self._fit()
        return d

    def _restart(self) -> None:
        self._buckets.clear()
        self._offset = None
        self._rate = 1.0

    def _fit(self) -> None:
        pts = np.asarray([(b[1], b[2]) for b in self._buckets])
        d, h = pts[:, 0], pts[:, 1]
        if len(pts) >= 10:  # ten seconds of envelope before the rate is worth fitting
            dc = d - d.mean()
            rate = float((dc * (h - h.mean())).sum() / (dc * dc).sum())
            self._rate = min(max(rate, 0.999), 1.001)  # crystal clocks are within a few hundred ppm of nominal
        self._offset = float((h - self._rate * d).min())

    def to_host(self, device_time: float | np.ndarray) -> float | np.ndarray:
        """Host time of an (unwrapped) device time; raises until the first observation."""
        if self._offset is None:
            raise RuntimeError("the clock model has no observation yet")
        return self._offset + self._rate * np.asarray(device_time) if isinstance(device_time, np.ndarray) \
            else self._offset + self._rate * device_time

    @property
    def drift_ppm(self) -> float:
        return (self._rate - 1.0) * 1e6
