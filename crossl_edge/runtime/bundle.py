"""An edge bundle on disk: manifest.json plus one program file per backend, each checked by sha256.

The manifest is the one contract between `crossl_edge.export` (which writes it) and the runtime (which
reads it); its schema is documented in export/README.md. Standard library and numpy only: no torch.

The manifest is sealed as it is written (`write_manifest`): its `integrity` record holds the sha256 of its
content (the JSON without that record, keys sorted, no spaces, UTF-8) and one sha256 per top-level field,
and `load_bundle` checks them before anything else, so an edited manifest is refused by the name of the
field that changed. Indentation and key order are not content. The digest catches an edited or damaged
manifest, not someone set on changing it (they can recompute it): for that a deployment signs its bundles
(`crossl_edge.runtime.signing`) and its devices refuse any bundle not signed by a key they trust.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # PyNaCl, only where bundles are signed or signatures checked
    from nacl.signing import SigningKey, VerifyKey

import numpy as np

from crossl_edge.spec import ModalitySpec, SpecError, check_specs

FORMAT = "crossl-edge-bundle/1"
#: A bundle with a personalised numpy head (`head`): a /1 reader would ignore the head and predict with the
#: generic one, possibly under other class names, so it must refuse the bundle; hence a new format.
FORMAT_HEAD = "crossl-edge-bundle/2"
FORMATS = (FORMAT, FORMAT_HEAD)
MANIFEST = "manifest.json"
INTEGRITY = "integrity"  # the manifest's field that holds its own digest (and signature); not part of its content
#: Paths (os.pathsep-separated) of the Ed25519 verify keys a device trusts; set, every bundle must be signed by one
VERIFY_KEY_ENV = "CROSSL_EDGE_VERIFY_KEY"
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

    @property
    def digest(self) -> str | None:
        """The sha256 of the manifest's content (checked by `load_bundle`); None on a manifest never sealed."""
        record = self.raw.get(INTEGRITY)
        return record.get("sha256") if isinstance(record, dict) else None

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


def canonical(d: dict[str, Any]) -> bytes:
    """The content of a manifest (or a part of it) as bytes: JSON with sorted keys, no spaces, UTF-8."""
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


DIGEST_OF = "the manifest without this field, as JSON with sorted keys and no spaces, UTF-8"
RECORD_FIELDS = {"algorithm", "of", "sha256", "fields", "signature"}


def manifest_content(d: dict[str, Any]) -> dict[str, Any]:
    """The manifest without its integrity record: what the digest and the signature cover."""
    return {k: v for k, v in d.items() if k != INTEGRITY}


def seal(d: dict[str, Any], signing_key: "SigningKey | None" = None) -> dict[str, Any]:
    """The manifest with a fresh integrity record (any old one replaced), signed with `signing_key` if given."""
    body = json.loads(json.dumps(manifest_content(d)))  # as it will read back: tuples become lists, and so on
    record: dict[str, Any] = {
        "algorithm": "sha256",
        "of": DIGEST_OF,
        "sha256": _sha256(canonical(body)),
        "fields": {k: _sha256(canonical({k: v})) for k, v in body.items()},
    }
    if signing_key is not None:
        from crossl_edge.runtime.signing import sign

        record["signature"] = sign(canonical(body), signing_key)
    return {**body, INTEGRITY: record}


def write_manifest(folder: Path, d: dict[str, Any], signing_key: "SigningKey | None" = None) -> dict[str, Any]:
    """Seal `d` (see `seal`) and write it as the folder's manifest.json; returns what was written."""
    sealed = seal(d, signing_key)
    (Path(folder) / MANIFEST).write_text(json.dumps(sealed, indent=1))
    return sealed


def check_integrity(d: dict[str, Any], where: Path) -> str:
    """The manifest's content digest, after checking it against its integrity record; BundleError naming the
    file, and the fields that changed, if they differ."""
    record = d.get(INTEGRITY)
    if not (isinstance(record, dict) and record.get("algorithm") == "sha256" and isinstance(record.get("sha256"), str)
            and isinstance(record.get("fields"), dict) and record.get("of") == DIGEST_OF and set(record) <= RECORD_FIELDS):
        raise BundleError(
            f"{where} has no valid integrity record (field {INTEGRITY!r}, the sha256 of its content): it was written "
            "before manifests were sealed, or the record was edited or removed; re-export the bundle"
        )
    body = manifest_content(d)
    digest = _sha256(canonical(body))
    if digest == record["sha256"] and record["fields"] == {k: _sha256(canonical({k: v})) for k, v in body.items()}:
        if "signature" in record:  # not covered by the digest: checked against itself (who signed is another matter)
            from crossl_edge.runtime.signing import check_record

            check_record(canonical(body), record["signature"], where)
        return digest
    fields = record["fields"]
    changed = [k for k in body if k in fields and fields[k] != _sha256(canonical({k: body[k]}))]
    added, removed = [k for k in body if k not in fields], [k for k in fields if k not in body]
    if digest == record["sha256"] or not (changed or added or removed):
        raise BundleError(f"{where}: its integrity record ({INTEGRITY!r}) was edited: it no longer describes the "
                          "manifest's content; re-export (or re-copy) the bundle")
    what = [f"{', '.join(map(repr, ks))} {verb}" for ks, verb in ((changed, "changed"), (added, "added"),
                                                                    (removed, "removed")) if ks]
    raise BundleError(f"{where} was edited after it was written (field {'; '.join(what)}): the manifest no longer "
                      "matches its digest; re-export (or re-copy) the bundle rather than edit it")


def trusted_keys(verify_keys: "Sequence[VerifyKey | str | Path] | None" = None) -> list["VerifyKey"]:
    """The verify keys given (key objects or .pub files), or else those named by $CROSSL_EDGE_VERIFY_KEY."""
    if verify_keys is None:
        verify_keys = [p for p in os.environ.get(VERIFY_KEY_ENV, "").split(os.pathsep) if p.strip()]
    if not verify_keys:
        return []
    from crossl_edge.runtime.signing import load_verify_key

    return [load_verify_key(k) if isinstance(k, (str, Path)) else k for k in verify_keys]


def load_bundle(
    path: str | Path, backends: tuple[str, ...] | None = None,
    verify_keys: "Sequence[VerifyKey | str | Path] | None" = None,
) -> Bundle:
    """Check the manifest's digest (and, where verify keys are given or named by $CROSSL_EDGE_VERIFY_KEY, its
    signature), parse it, and check the sha256 of the files of `backends` (default: every listed file).

    Raises BundleError, naming the file, for an edited or unsigned manifest and for a missing, resized or
    altered file: a tampered or half-copied bundle never reaches a runtime."""
    path = Path(path)
    raw = read_manifest(path)
    check_integrity(raw, path / MANIFEST)
    keys = trusted_keys(verify_keys)
    if keys:
        from crossl_edge.runtime.signing import verify

        verify(canonical(manifest_content(raw)), raw[INTEGRITY].get("signature"), keys, path / MANIFEST)
    manifest = Manifest.from_dict(raw)
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
