"""Streaming resampler: a sensor's rate -> the rate the model was trained at.

A sensor rarely samples at the rate of the data set a bundle was trained on (a BITalino EDA at 10 Hz
feeding a model trained on 4 Hz EDA). The resampler takes contiguous chunks at the input rate, each with
the host time of its first sample, and returns chunks at the output rate on a grid anchored to the
stream's first sample. Downsampling by m = floor(in / out) >= 2 first averages m consecutive samples (a
boxcar against aliasing, its half-length delay taken off the times); then values are linearly
interpolated (also at equal rates, the grid smooths the clock model's re-fits out of the times).

Whether a chunk follows the last one without a missing sample is the device's knowledge (sequence numbers,
sample indices), passed as `contiguous`: such a chunk continues the grid, unless the clock says the grid
has drifted more than `reanchor_s` from the true time; any other chunk restarts the grid at its own
time, so a hole stays a hole (the classifier bridges or resets it) instead of shifting what follows. numpy only.
"""

from __future__ import annotations

import numpy as np


class Resampler:
    def __init__(self, rate_in: float, rate_out: float, reanchor_s: float = 0.05) -> None:
        if not (rate_in > 0 and rate_out > 0):
            raise ValueError(f"rates must be positive, got {rate_in} -> {rate_out}")
        self.rate_in, self.rate_out = float(rate_in), float(rate_out)
        self.identity = abs(rate_in - rate_out) <= 1e-9 * rate_out
        self.m = max(int(rate_in // rate_out), 1)
        self.reanchor_s = reanchor_s
        self.restarts = 0
        self._restart()

    def _restart(self) -> None:
        self._tail: np.ndarray | None = None  # last m-1 raw samples (boxcar state)
        self._prev: np.ndarray | None = None  # last smoothed sample (interpolation state)
        self._t_prev = 0.0  # time of _prev
        self._t_next_in: float | None = None  # expected time of the next input sample
        self._t_out: float | None = None  # time of the next output sample

    def push(self, x: np.ndarray, t0: float, contiguous: bool = True) -> tuple[np.ndarray, float]:
        """x [n, C] at rate_in from t0 -> (y [k, C] at rate_out, t of y[0]); k may be 0."""
        x = np.asarray(x, dtype=np.float32)
        period = 1.0 / self.rate_in
        if self._t_next_in is not None and (not contiguous or abs(t0 - self._t_next_in) > self.reanchor_s):
            self.restarts += 1
            self._restart()
        if self._t_next_in is None:
            self._t_out = t0 + (self.m - 1) * period / 2
        else:
            t0 = self._t_next_in  # contiguous: the grid keeps its own time
        self._t_next_in = t0 + len(x) * period
        if self.identity:
            return x, t0
        # boxcar average over m samples, carrying the previous chunk's tail
        if self.m > 1:
            ext = x if self._tail is None else np.concatenate([self._tail, x])
            lead = 0 if self._tail is None else len(self._tail)
            self._tail = ext[-(self.m - 1):].copy()
            if len(ext) < self.m:
                return np.empty((0, x.shape[1]), np.float32), float(self._t_out)
            c = np.cumsum(np.concatenate([np.zeros((1, ext.shape[1]), np.float64), ext]), axis=0)
            smooth = ((c[self.m:] - c[:-self.m]) / self.m).astype(np.float32)
            # smooth[i] averages ext[i : i + m], so it sits at ext index i + (m - 1) / 2; ext[lead] is at t0
            t_smooth0 = t0 + ((self.m - 1) / 2 - lead) * period
        else:
            smooth, t_smooth0 = x, t0
        if len(smooth) == 0:
            return np.empty((0, x.shape[1]), np.float32), float(self._t_out)
        if self._prev is not None:
            vals = np.concatenate([self._prev[None], smooth])
            t_first = self._t_prev
        else:
            vals, t_first = smooth, t_smooth0
        t_last = t_first + (len(vals) - 1) * period
        k = int(np.floor((t_last - self._t_out) * self.rate_out + 1e-9)) + 1
        t_out0 = self._t_out
        if k > 0:
            pos = (t_out0 + np.arange(k) / self.rate_out - t_first) * self.rate_in
            pos = np.clip(pos, 0, len(vals) - 1)
            i = np.minimum(np.floor(pos).astype(np.int64), len(vals) - 2) if len(vals) > 1 else np.zeros(k, np.int64)
            frac = (pos - i)[:, None].astype(np.float32)
            y = vals[i] * (1 - frac) + vals[np.minimum(i + 1, len(vals) - 1)] * frac
            self._t_out = t_out0 + k / self.rate_out
        else:
            y = np.empty((0, x.shape[1]), np.float32)
        self._prev, self._t_prev = vals[-1].copy(), t_last
        return y.astype(np.float32), float(t_out0)
