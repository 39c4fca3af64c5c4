"""An edge bundle on disk: manifest.json plus one program file per backend, each checked by sha256.

The manifest is the one contract between `crossl_edge.export` (which writes it) and the runtime (which
reads it); its schema is documented in export/README.md. Standard library and numpy only: no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossl_edge.spec import ModalitySpec, SpecError, check_specs

FORMAT = "crossl-edge-bundle/1"
#: A bundle with a personalised numpy head (`head`): a /1 reader would ignore the head and predict with the
#: generic one, possibly under other class names, so it must refuse the bundle; hence a new format.
FORMAT_HEAD = "crossl-edge-bundle/2"
FORMATS = (FORMAT, FORMAT_HEAD)
MANIFEST = "manifest.json"
#: Backends a bundle can hold, and the file each writes inside the bundle folder.
BACKEND_FILES = {"executorch": "model.pte", "litert": "model.tflite"}
AGGREGATE = "aggregate"  # the aggregator + head program: (z [1,M,D], presence [1,M]) -> (logits [1,K], global [1,G])


def encoder_program(modality: str) -> str:
    """Name of a modality's encoder program (an ExecuTorch method, a LiteRT signature): x [1,C,T] -> [1,D]."""
    return f"enc_{modality}"


class BundleError(ValueError):
    """A bundle is missing, malformed, tampered with, or made for something else; the message says what."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class TensorIO:
    """How to feed or read one program tensor: its shape, element type and (for integer types) quantisation.

    real value = (stored - zero_point) * scale; float tensors have scale 1 and zero point 0."""

    name: str  # the backend's own name for it (LiteRT signature input/output name; ExecuTorch position as text)
    shape: tuple[int, ...]
    dtype: str  # "float32" or "int8"
    scale: float = 1.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.dtype != "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "scale": self.scale,
                "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorIO":
        t = cls(str(d["name"]), tuple(int(v) for v in d["shape"]), str(d["dtype"]), float(d["scale"]),
                int(d["zero_point"]))
        if t.dtype not in ("float32", "int8"):
            raise BundleError(f"tensor {t.name!r}: unsupported dtype {t.dtype!r} (float32 or int8)")
        if not (t.scale > 0 and math.isfinite(t.scale)):
            raise BundleError(f"tensor {t.name!r}: quantisation scale must be positive, got {t.scale}")
        return t


@dataclass(frozen=True)
class BackendEntry:
    """One backend's file in the bundle and the I/O of each of its programs (canonical name -> TensorIO)."""

    backend: str
    file: str
    sha256: str
    bytes: int
    inputs: dict[str, dict[str, TensorIO]]  # program -> canonical input name ("x", "z", "presence") -> TensorIO
    outputs: dict[str, dict[str, TensorIO]]  # program -> canonical output ("embedding", "logits", "global")

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "sha256": self.sha256, "bytes": self.bytes,
            "programs": {
                p: {"inputs": {k: t.to_dict() for k, t in self.inputs[p].items()},
                    "outputs": {k: t.to_dict() for k, t in self.outputs[p].items()}}
                for p in self.inputs
            },
        }

    @classmethod
    def from_dict(cls, backend: str, d: dict[str, Any]) -> "BackendEntry":
        progs = d["programs"]
        return cls(
            backend, str(d["file"]), str(d["sha256"]), int(d["bytes"]),
            {p: {k: TensorIO.from_dict(t) for k, t in v["inputs"].items()} for p, v in progs.items()},
            {p: {k: TensorIO.from_dict(t) for k, t in v["outputs"].items()} for p, v in progs.items()},
        )


@dataclass(frozen=True)
class FileEntry:
    """A file of the bundle besides the programs (a personalised head), with its size and sha256."""

    file: str
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FileEntry":
        return cls(str(d["file"]), str(d["sha256"]), int(d["bytes"]))


def _session_floor(d: Any) -> float | None:
    if d is None:
        return None
    floor = float(d["std_floor_fraction"])
    if not 0 < floor <= 1:
        raise BundleError(f"session_normalization.std_floor_fraction must be in (0, 1], got {floor}")
    return floor


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs besides the program files (see export/README.md for every field)."""

    name: str
    specs: tuple[ModalitySpec, ...]  # the M axis, in order
    class_names: tuple[str, ...]
    norm_mean: dict[str, list[float]]
    norm_std: dict[str, list[float]]
    window_s: float
    hop_s: float
    embed_dim: int
    global_dim: int
    precision: str  # "int8" or "fp32"
    backends: dict[str, BackendEntry]
    head: FileEntry | None  # a personalised head (format /2): its file replaces the program's logits
    raw: dict[str, Any]  # the whole JSON, for fields only tools read (quantisation, verification, versions)
    # Per-user adaptation: None = standardise with the training statistics above; a fraction = the model was
    # trained on session-normalised windows, so the runtime standardises with the running statistics of the
    # session it streams, the std floored at this fraction of the training std
    session_std_floor: float | None = None

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        if not isinstance(d, dict) or d.get("format") not in FORMATS:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise BundleError(f"not a {' or '.join(FORMATS)} manifest (format: {found!r}); re-export with this version")
        if (d["format"] == FORMAT_HEAD) != ("head" in d):
            raise BundleError(f"a {FORMAT_HEAD} manifest, and only one, carries a personalised head")
        try:
            specs = check_specs(ModalitySpec.from_dict(s) for s in d["modalities"])
            norm = d["normalization"]
            backends = {b: BackendEntry.from_dict(b, e) for b, e in d["backends"].items()}
            m = cls(
                name=str(d["name"]), specs=specs, class_names=tuple(str(c) for c in d["class_names"]),
                norm_mean={k: [float(v) for v in vs] for k, vs in norm["mean"].items()},
                norm_std={k: [float(v) for v in vs] for k, vs in norm["std"].items()},
                window_s=float(d["window_s"]), hop_s=float(d["hop_s"]), embed_dim=int(d["embed_dim"]),
                global_dim=int(d["global_dim"]), precision=str(d["precision"]), backends=backends,
                head=FileEntry.from_dict(d["head"]) if "head" in d else None, raw=d,
                session_std_floor=_session_floor(d.get("session_normalization")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, BundleError):
                raise
            what = "a modality is malformed" if isinstance(e, SpecError) else f"{type(e).__name__}: {e}"
            raise BundleError(f"malformed manifest ({what})") from e
        m._check()
        return m

    def _check(self) -> None:
        if len(self.class_names) < 2:
            raise BundleError(f"manifest lists {len(self.class_names)} classes; a classifier needs at least 2")
        if not (self.hop_s > 0 and self.window_s > 0):
            raise BundleError(f"window_s and hop_s must be positive, got {self.window_s} and {self.hop_s}")
        for s in self.specs:
            if abs(s.window_seconds - self.window_s) > 1e-6:
                raise BundleError(f"modality {s.name!r} covers {s.window_seconds} s, the manifest's window is {self.window_s} s")
            for stats in (self.norm_mean, self.norm_std):
                if len(stats.get(s.name, ())) != s.channels:
                    raise BundleError(f"normalisation statistics for {s.name!r} do not have {s.channels} channels")
        if not self.backends:
            raise BundleError("manifest lists no backend programs")
        want = {encoder_program(n) for n in self.modality_names} | {AGGREGATE}
        for b, e in self.backends.items():
            if b not in BACKEND_FILES:
                raise BundleError(f"unknown backend {b!r} in manifest; known: {sorted(BACKEND_FILES)}")
            if set(e.inputs) != want:
                raise BundleError(f"{b}: programs {sorted(e.inputs)} do not match the modalities (want {sorted(want)})")
            for n, s in zip(self.modality_names, self.specs):
                x = e.inputs[encoder_program(n)].get("x")
                if x is None or x.shape != (1, s.channels, s.window):
                    raise BundleError(f"{b}: {encoder_program(n)} input is {x and x.shape}, want (1, {s.channels}, {s.window})")


@dataclass(frozen=True)
class Bundle:
    """A bundle folder whose manifest parsed and whose files matched their checksums."""

    path: Path
    manifest: Manifest

    def file(self, backend: str) -> Path:
        return self.path / self.manifest.backends[backend].file

    def program_bytes(self, backend: str) -> bytes:
        """The backend's program file, read once and checked again: the runtime loads exactly these bytes,
        so a file swapped after `load_bundle` checked it is still refused."""
        return _check_file(self.path, self.manifest.backends[backend], backend)

    def head_bytes(self) -> bytes | None:
        """The personalised head file, checked again as it is read (None: the bundle uses its program's head)."""
        return None if self.manifest.head is None else _check_file(self.path, self.manifest.head, "the personalised head")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest JSON of a bundle folder, unchecked (tools that inspect or rewrite bundles use this)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(
            f"bundle folder {path} does not exist; make one with `python -m crossl_edge.export --int8` "
            "(after `make demo`)"
        )
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{path} is not a bundle: it has no {MANIFEST}")
    try:
        return json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath} is not valid JSON ({e})") from e


def load_bundle(path: str | Path, backends: tuple[str, ...] | None = None) -> Bundle:
    """Parse the manifest and check the sha256 of the files of `backends` (default: every listed file).

    Raises BundleError, naming the file, for a missing, resized or altered file: a tampered or half-copied
    bundle never reaches a runtime."""
    path = Path(path)
    manifest = Manifest.from_dict(read_manifest(path))
    check = manifest.backends if backends is None else backends
    for b in check:
        if b not in manifest.backends:
            raise BundleError(f"bundle {path} has no {b} program (it has: {', '.join(sorted(manifest.backends))})")
        _check_file(path, manifest.backends[b], b)
    if manifest.head is not None:
        _check_file(path, manifest.head, "the personalised head")
    return Bundle(path, manifest)


def _check_file(path: Path, e: BackendEntry | FileEntry, what: str) -> bytes:
    f = path / e.file
    if Path(e.file).name != e.file:
        raise BundleError(f"manifest names file {e.file!r} outside the bundle folder")
    if not f.is_file():
        raise BundleError(f"bundle {path} lacks {e.file} (listed in its manifest for {what})")
    data = f.read_bytes()
    _check_digest(f, e, data)
    return data


def _check_digest(f: Path, e: BackendEntry | FileEntry, data: bytes) -> None:
    if len(data) != e.bytes or hashlib.sha256(data).hexdigest() != e.sha256:
        raise BundleError(
            f"{f} does not match its manifest checksum (sha256 {e.sha256[:12]}..., {e.bytes} bytes; found "
            f"{len(data)} bytes): the file was altered or truncated; re-export or re-copy the bundle"
        )


def norm_arrays(manifest: Manifest, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean [C,1], std [C,1]) float32 for one modality, with the training-time floor on std."""
    from crossl_edge.data.normalize import STD_FLOOR

    mean = np.asarray(manifest.norm_mean[name], dtype=np.float32)[:, None]
    std = np.maximum(np.asarray(manifest.norm_std[name], dtype=np.float32), STD_FLOOR)[:, None]
    return mean, std
