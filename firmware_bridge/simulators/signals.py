"""Real recorded signals, replayed in a loop at any rate, for the simulated sensors.

A `SignalSource` holds one recording of one modality ([L, C] in physical units at its rate) and hands out
the next n samples at the rate a simulated sensor asks for (linear interpolation, wrapping around at the
end), after an optional transform into the device's units (e.g. microsiemens -> BITalino ADC codes).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


class SignalSource:
    def __init__(self, data: np.ndarray, rate: float, transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 start_s: float = 0.0, name: str = "") -> None:
        x = np.asarray(data, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
            raise ValueError(f"signal {name!r}: need a finite [L >= 2, C] array, got shape {x.shape}")
        self.data, self.rate, self.transform, self.name = x, float(rate), transform, name
        self.channels = x.shape[1]
        self._t = start_s  # source time of the next sample

    @property
    def duration_s(self) -> float:
        return len(self.data) / self.rate

    def seek(self, t: float) -> None:
        """Play from source time t (seconds) on."""
        self._t = float(t)

    def take(self, n: int, rate: float) -> np.ndarray:
        """The next n samples at `rate` Hz: [n, C] (transformed)."""
        t = self._t + np.arange(n) / rate
        self._t += n / rate
        pos = (t * self.rate) % len(self.data)
        i = np.floor(pos).astype(np.int64)
        frac = (pos - i)[:, None]
        x = self.data[i] * (1 - frac) + self.data[(i + 1) % len(self.data)] * frac
        return self.transform(x) if self.transform is not None else x


def dataset_signals(dataset: str, key: str, modalities, data_root=None) -> dict[str, SignalSource]:
    """Each named modality of subject/group `key` of a data set (its recordings back to back), loaded once."""
    from crossl_edge.runtime.replay import load_recordings

    recs, _ = load_recordings(dataset, key, data_root)
    out = {}
    for modality in modalities:
        parts = [r.signals[modality] for r in recs if modality in r.signals]
        if not parts:
            raise ValueError(f"{dataset}:{key} has no {modality!r}; it has {sorted(recs[0].signals)}")
        out[modality] = SignalSource(np.concatenate(parts, axis=1).T, recs[0].rates[modality],
                                     name=f"{dataset}:{key}:{modality}")
    return out


def dataset_signal(dataset: str, key: str, modality: str, data_root=None) -> SignalSource:
    """One modality of subject/group `key` of a data set, its recordings back to back."""
    return dataset_signals(dataset, key, [modality], data_root)[modality]
