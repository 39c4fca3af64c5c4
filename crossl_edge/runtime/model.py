"""The bundle's network as the device runs it: encode one modality's window, aggregate what is present.

Normalisation (the training statistics from the manifest) and input quantisation are fused into one
per-channel affine map written into preallocated buffers, int8 outputs are dequantised by one table lookup, and
the softmax of a window's few logits is done in Python floats: on these small programs the Python around a call
costs as much as the call, and each numpy call costs more than the arithmetic (DESIGN.md, toolchain facts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crossl_edge.runtime.backends import ProgramRunner, open_runner
from crossl_edge.runtime.bundle import (
    AGGREGATE, Bundle, BundleError, TensorIO, encoder_program, load_bundle, norm_arrays,
)
from crossl_edge.runtime.head import HeadError, LinearHead


class InputError(ValueError):
    """A window or embedding handed to the model has the wrong shape or non-finite values."""


class _Feed:
    """Writes float values into one program input buffer as its stored type: q = clip(rint(x * a + b)).

    Every step is a ufunc writing into a preallocated buffer (the runner's own input tensor: nothing is copied
    again before the call), with its constants as 0-d arrays: on inputs this small a Python scalar's conversion,
    or np.clip's Python wrapper, costs more than the arithmetic."""

    def __init__(self, t: TensorIO, buffer: np.ndarray, a: np.ndarray | float = 1.0, b: np.ndarray | float = 0.0) -> None:
        # x * a + b first applies any caller-side affine map (normalisation), then quantisation.
        self.a = np.asarray(a, dtype=np.float32) / np.float32(t.scale)
        self.b = np.asarray(b, dtype=np.float32) / np.float32(t.scale) + np.float32(t.zero_point)
        self.quantized = t.quantized
        self.out = buffer  # [1, ...] in the stored type
        # a float input is computed in place; an int8 one in float32 first, then cast
        self.work = np.zeros(t.shape[1:], dtype=np.float32) if t.quantized else buffer[0]
        info = np.iinfo(t.dtype) if t.quantized else None
        self.lo, self.hi = (np.array(info.min, np.float32), np.array(info.max, np.float32)) if info else (None, None)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        np.multiply(x, self.a, out=self.work)
        np.add(self.work, self.b, out=self.work)
        if self.quantized:
            np.rint(self.work, out=self.work)
            np.minimum(self.work, self.hi, out=self.work)
            np.maximum(self.work, self.lo, out=self.work)
            self.out[0] = self.work  # casts to the stored type
        return self.out

    def stored(self, value: float) -> np.ndarray:
        """`value` as this input stores it (a 0-d array)."""
        v = np.float32(value) * self.a.flat[0] + self.b.flat[0]
        if self.quantized:
            v = np.clip(np.rint(v), self.lo, self.hi)
        return np.array(v, dtype=self.out.dtype)


class _Fetch:
    """Reads one program output as float32 values [shape without the batch axis], a new array each call (callers
    keep embeddings, and the runner's output buffers are overwritten by the program's next run).

    An int8 output is dequantised by looking each byte up in a table of its 256 values, computed once as
    real = (stored - zero_point) * scale in float32 (so the values are those of the two ufuncs, bit for bit): one
    call instead of two, on an output read every window (1.9 against 2.6 us for 320 values on the 2-core VM).
    A quantised output is int8: the manifest refuses any other stored type (TensorIO.from_dict)."""

    def __init__(self, t: TensorIO) -> None:
        self.quantized, self.shape = t.quantized, t.shape[1:]
        if self.quantized:
            stored = np.arange(256, dtype=np.uint8).view(np.int8)  # indexed by the byte's unsigned value
            self.table = np.multiply(np.subtract(stored, np.float32(t.zero_point), dtype=np.float32),
                                     np.float32(t.scale))

    def __call__(self, value: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.array(value, dtype=np.float32).reshape(self.shape)
        return self.table.take(value.view(np.uint8)).reshape(self.shape)


@dataclass
class Output:
    """One aggregation: class logits and probabilities, and the global embedding (for personalisation)."""

    logits: np.ndarray  # [K]
    probs: np.ndarray  # [K]
    embedding: np.ndarray  # [G]
    base_logits: np.ndarray  # the bundle program's own head's logits (= logits unless the bundle is personalised)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of one window's logits [K], computed in Python floats (float64): for the few classes of
    a window each numpy call costs more than the arithmetic (2.0 against 5.5 us for two classes on the 2-core VM)."""
    values = logits.tolist()
    top = max(values)
    e = [math.exp(v - top) for v in values]
    total = sum(e)
    return np.array([v / total for v in e], dtype=np.float32)


class EdgeModel:
    """Encoders and aggregator of a checked bundle on one backend (see `crossl_edge.runtime.backends`).

    Windows are in the loaders' physical units, [C, T] at the modality's native rate; the model applies
    the manifest's normalisation itself."""

    def __init__(self, bundle: Bundle | str, backend: str = "auto", threads: int | None = 1) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        m = self.bundle.manifest
        self.manifest = m
        self.runner: ProgramRunner = open_runner(self.bundle, backend, threads)
        self.backend = self.runner.backend
        entry = m.backends["executorch" if self.backend == "executorch" else "litert"]
        self.specs = m.specs
        self.names = m.modality_names
        self.class_names = m.class_names
        self._enc_in: dict[str, _Feed] = {}
        self._enc_io: dict[str, TensorIO] = {}
        self._enc_out: dict[str, _Fetch] = {}
        self._programs = {s.name: encoder_program(s.name) for s in m.specs}
        for s in m.specs:
            prog = encoder_program(s.name)
            mean, std = norm_arrays(m, s.name)
            (buffer,) = self.runner.inputs(prog)
            self._enc_in[s.name] = _Feed(entry.inputs[prog]["x"], buffer, 1.0 / std, -mean / std)
            self._enc_io[s.name] = entry.inputs[prog]["x"]
            self._enc_out[s.name] = _Fetch(entry.outputs[prog]["embedding"])
        agg_in, agg_out = entry.inputs[AGGREGATE], entry.outputs[AGGREGATE]
        self._logits_out, self._global_out = _Fetch(agg_out["logits"]), _Fetch(agg_out["global"])
        z_buffer, p_buffer = self.runner.inputs(AGGREGATE)
        self._z_in, self._p_in = _Feed(agg_in["z"], z_buffer), _Feed(agg_in["presence"], p_buffer)
        # a float z is filled in the program's own buffer; an int8 one in float32 first, then quantised
        self._z = np.zeros((len(self.names), m.embed_dim), dtype=np.float32) if self._z_in.quantized else z_buffer[0]
        self._presence = p_buffer[0]  # written as stored: each row is absent or present
        self._absent, self._present = self._p_in.stored(0.0), self._p_in.stored(1.0)
        self._row = {name: i for i, name in enumerate(self.names)}
        self.head = _load_head(self.bundle)

    def set_normalization(self, name: str, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise `name`'s windows with these per-channel statistics from now on (per-user adaptation:
        the streaming classifier passes its session's running statistics). Written in place: no allocation."""
        feed, t = self._enc_in[name], self._enc_io[name]
        np.divide(1.0 / np.float32(t.scale), np.reshape(std, feed.a.shape), out=feed.a)
        np.multiply(-np.reshape(mean, feed.a.shape), feed.a, out=feed.b)
        feed.b += np.float32(t.zero_point)

    @property
    def calls(self):
        """Program name -> how many times it ran."""
        return self.runner.calls

    def encode(self, name: str, window: np.ndarray) -> np.ndarray:
        """The embedding [D] of one modality's raw window [C, T]."""
        s = self.specs[self.names.index(name)] if name in self.names else None
        if s is None:
            raise InputError(f"unknown modality {name!r}; the bundle has {', '.join(self.names)}")
        if window.shape != (s.channels, s.window):
            raise InputError(f"{name}: window of shape {window.shape}, the model takes ({s.channels}, {s.window})")
        if not np.isfinite(window).all():
            raise InputError(f"{name}: window holds NaN or infinite values")
        return self.encode_checked(name, window)

    def encode_checked(self, name: str, window: np.ndarray) -> np.ndarray:
        """`encode` without its checks, for callers whose windows are a bundle modality's shape and finite by
        construction (the streaming classifier drops non-finite samples as they are pushed)."""
        self._enc_in[name](window)
        (out,) = self.runner.invoke(self._programs[name])
        return self._enc_out[name](out)

    def aggregate(self, embeddings: dict[str, np.ndarray]) -> Output:
        """Fuse the embeddings of the present modalities (absent ones are simply not in the dict)."""
        self._prepare_aggregate(embeddings)
        logits, g = self.runner.invoke(AGGREGATE)
        base = self._logits_out(logits)
        g = self._global_out(g)
        logits = base if self.head is None else self.head(g, base)
        return Output(logits, softmax(logits), g, base)

    def _prepare_aggregate(self, embeddings: dict[str, np.ndarray]) -> None:
        """Write the aggregator's inputs: each present modality's embedding and presence in its row."""
        if not embeddings:
            raise InputError("no modality present: nothing to aggregate")
        self._z[:] = 0.0  # absent rows are zeros, as the aggregator was calibrated; it masks them anyway
        self._presence[:] = self._absent
        for name, z in embeddings.items():
            i = self._row.get(name)
            if i is None:
                raise InputError(f"unknown modality {name!r}; the bundle has {', '.join(self.names)}")
            self._z[i] = z
            self._presence[i] = self._present
        if self._z_in.quantized:
            self._z_in(self._z)

    def predict(self, windows: dict[str, np.ndarray]) -> Output:
        """Encode every given modality's window and aggregate them (the modalities not given are absent)."""
        return self.aggregate({name: self.encode(name, w) for name, w in windows.items()})


def _load_head(bundle: Bundle) -> LinearHead | None:
    """A personalised bundle's head, checked against the manifest's classes and global embedding size."""
    data = bundle.head_bytes()
    if data is None:
        return None
    m = bundle.manifest
    try:
        head = LinearHead.from_bytes(data, bundle.path / m.head.file)
    except HeadError as e:
        raise BundleError(str(e)) from e
    k_program = m.backends[next(iter(m.backends))].outputs[AGGREGATE]["logits"].shape[-1]
    if head.in_dim != m.global_dim or head.n_classes != len(m.class_names) or (head.residual and head.n_classes != k_program):
        raise BundleError(
            f"{m.head.file}: a head of {head.n_classes} classes on {head.in_dim} features does not fit the manifest "
            f"({len(m.class_names)} classes, global embedding {m.global_dim}"
            + (f", residual on the program's {k_program} classes)" if head.residual else ")")
        )
    return head
