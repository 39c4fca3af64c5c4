"""A personalised classification head: a linear map of the aggregator's global embedding, in numpy.

`python -m crossl_edge.personalize` fits one on the device and stores it as `head.npz` in a new bundle;
the runtime then computes the class logits itself instead of taking the bundle program's:

    logits = g @ weight.T + bias                  (a head of its own, any classes)
    logits = base_logits + g @ weight.T + bias    (residual: a correction of the bundle's own head)

A residual head over a linear base head is the same as a new linear head pulled towards the generic one,
which is what lets a handful of windows move it without forgetting what it learnt from many subjects.
numpy only: this runs on the device.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEAD_FILE = "head.npz"


class HeadError(ValueError):
    """A head file is malformed or does not fit the bundle."""


@dataclass(frozen=True)
class LinearHead:
    weight: np.ndarray  # float32 [K, G]
    bias: np.ndarray  # float32 [K]
    residual: bool  # add the bundle program's own logits (same classes) before this map

    def __post_init__(self) -> None:
        w, b = np.asarray(self.weight), np.asarray(self.bias)
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise HeadError(f"head weight {w.shape} and bias {b.shape} do not form a [K, G] map")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise HeadError("head holds NaN or infinite values")
        object.__setattr__(self, "weight", np.ascontiguousarray(w, dtype=np.float32))
        object.__setattr__(self, "bias", np.ascontiguousarray(b, dtype=np.float32))

    @property
    def n_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def in_dim(self) -> int:
        return self.weight.shape[1]

    def __call__(self, g: np.ndarray, base_logits: np.ndarray | None = None) -> np.ndarray:
        """Logits [..., K] of global embeddings g [..., G] (and the bundle's logits, for a residual head)."""
        out = g @ self.weight.T + self.bias
        if self.residual:
            if base_logits is None:
                raise HeadError("a residual head needs the bundle's own logits")
            out = out + base_logits
        return out.astype(np.float32, copy=False)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, weight=self.weight, bias=self.bias, residual=np.array(self.residual))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str | Path = HEAD_FILE) -> "LinearHead":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return cls(z["weight"], z["bias"], bool(z["residual"]))
        except (OSError, ValueError, KeyError) as e:
            if isinstance(e, HeadError):
                raise
            raise HeadError(f"{source} is not a head file (weight, bias, residual): {e}") from e
