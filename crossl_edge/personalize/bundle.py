"""Writing a personalised bundle: the original's programs, byte for byte, plus `head.npz` and a new manifest.

The original bundle is only read. The new one is staged in `<out>.partial/`, loaded back through the
runtime's own checks (format, sha256 of every file) and checked for parity on every backend it has that
is installed here: run from disk on the collected windows, it must give the logits the fitted head gave
in memory on that backend's embeddings. Only then is it renamed into place; a bundle that fails is kept as
`<out>.rejected/`. numpy only: this runs on the device.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from crossl_edge.runtime.backends import BACKENDS, installed
from crossl_edge.runtime.bundle import (
    FORMAT_HEAD, INTEGRITY, MANIFEST, Bundle, BundleError, FileEntry, load_bundle, write_manifest,
)
from crossl_edge.runtime.head import HEAD_FILE, LinearHead

PARITY_TOL = 1e-4  # the runtime applies the head in float32, the fit checked it in float32 too
COLLECTED_FILE = "collected.npz"  # the labelled windows' embeddings, to refit without collecting again


class PersonalizedBundleError(BundleError):
    """The personalised bundle could not be written or failed its parity check (it was not published)."""


@dataclass
class Collected:
    """What a head is fitted on: per labelled window its global embedding, the bundle's logits and the class."""

    g: np.ndarray  # float32 [N, G]
    base_logits: np.ndarray  # float32 [N, K_bundle]
    y: np.ndarray  # int64 [N], indices into class_names
    class_names: tuple[str, ...]
    present: tuple[str, ...]  # modalities present while collecting
    windows: dict[str, np.ndarray] | None = None  # raw windows {name: [N, C, T]} when the source had them

    def save(self, path: Path) -> None:
        arrays = {"g": self.g, "base_logits": self.base_logits, "y": self.y,
                  "class_names": np.array(self.class_names), "present": np.array(self.present)}
        arrays.update({f"x_{k}": v for k, v in (self.windows or {}).items()})
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Collected":
        try:
            with np.load(path, allow_pickle=False) as z:
                windows = {k[2:]: z[k] for k in z.files if k.startswith("x_")} or None
                return cls(z["g"].astype(np.float32), z["base_logits"].astype(np.float32), z["y"].astype(np.int64),
                           tuple(str(c) for c in z["class_names"]), tuple(str(p) for p in z["present"]), windows)
        except (OSError, KeyError, ValueError) as e:
            raise BundleError(f"{path} is not a collected-windows file ({COLLECTED_FILE} of a personalised bundle): {e}") from e


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parity(bundle: Path | Bundle, collected: Collected, head: LinearHead, backends: list[str]) -> dict[str, Any]:
    """Per backend: the largest logit difference between the bundle run from disk and the head applied in memory
    to that backend's embeddings of the collected windows (raw windows where the source had them)."""
    from crossl_edge.runtime.model import EdgeModel

    out = {}
    for b in backends:
        model = EdgeModel(bundle, b, threads=1)
        if collected.windows is not None:  # one run of the programs per window gives all three
            runs = [model.predict({n: collected.windows[n][i] for n in collected.present}) for i in range(len(collected.y))]
            g, base = np.stack([o.embedding for o in runs]), np.stack([o.base_logits for o in runs])
            logits = np.stack([o.logits for o in runs])
        else:  # embeddings only (a live collection): the head path from the aggregator's outputs on
            g, base = collected.g, collected.base_logits
            logits = np.stack([model.head(g[i], base[i]) for i in range(len(g))])
        fitted = head(g, base)
        diff = float(np.abs(logits - fitted).max())
        agree = float((logits.argmax(1) == fitted.argmax(1)).mean())
        out[b] = {"windows": len(g), "max_logit_diff": diff, "argmax_agreement": agree, "ok": diff <= PARITY_TOL}
    return out


def write_personalized(
    source: Bundle, out: str | Path, head: LinearHead, collected: Collected, info: dict[str, Any],
    replace: bool = False, signing_key=None,
) -> tuple[Path, dict[str, Any]]:
    """Write and check the personalised bundle at `out` (its manifest sealed, and signed with `signing_key` if
    given); returns (its path, the parity results)."""
    out = Path(out)
    if out.resolve() == source.path.resolve():
        raise PersonalizedBundleError(f"--out {out} is the original bundle; personalisation never overwrites it")
    if out.exists() and not replace:
        raise PersonalizedBundleError(f"{out} exists; pass --replace to overwrite it, or choose another --out")
    if out.exists() and not (out / MANIFEST).is_file():
        raise PersonalizedBundleError(f"{out} exists and is not a bundle; choose another --out")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    m = json.loads(json.dumps(source.manifest.raw))  # a deep copy
    source_signature = m.pop(INTEGRITY, {}).get("signature")  # the new manifest gets a record of its own
    for b in m["backends"]:
        (staging / m["backends"][b]["file"]).write_bytes(source.program_bytes(b))  # checked again as read
    head_bytes = head.to_bytes()
    (staging / HEAD_FILE).write_bytes(head_bytes)
    collected.save(staging / COLLECTED_FILE)
    base_classes = m["class_names"]
    m.update({
        "format": FORMAT_HEAD, "name": out.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "class_names": list(collected.class_names),
        "head": FileEntry(HEAD_FILE, _sha256(head_bytes), len(head_bytes)).to_dict(),
    })
    m["personalization"] = {
        **info,
        "from": {"bundle": str(source.path), "name": source.manifest.name,
                 "manifest_sha256": _sha256((source.path / MANIFEST).read_bytes()),
                 "manifest_digest": source.manifest.digest,  # of its content, as checked when it was loaded
                 "signed_by": source_signature.get("public_key") if isinstance(source_signature, dict) else None,
                 "class_names": base_classes},
        "collected": {"file": COLLECTED_FILE, "sha256": _sha256((staging / COLLECTED_FILE).read_bytes()),
                      "windows_per_class": {c: int((collected.y == i).sum()) for i, c in enumerate(collected.class_names)},
                      "present": list(collected.present)},
    }
    write_manifest(staging, m, signing_key)
    # the runtime's checks: digest (and signature, if signed), format, every file's size and sha256
    bundle = load_bundle(staging, verify_keys=[signing_key.verify_key] if signing_key else [])
    usable = [b for b in BACKENDS if BACKENDS[b][0] in bundle.manifest.backends and installed(b)]
    checks = parity(bundle, collected, head, usable)
    m["personalization"]["parity"] = {"tolerance": PARITY_TOL, "results": checks}
    write_manifest(staging, m, signing_key)
    failed = {b: c for b, c in checks.items() if not c["ok"]}
    if failed or not checks:
        rejected = out.with_name(out.name + ".rejected")
        shutil.rmtree(rejected, ignore_errors=True)
        staging.rename(rejected)
        why = ", ".join(f"{b}: max |dlogit| {c['max_logit_diff']:.2e}" for b, c in failed.items()) or \
            "no runtime for its programs is installed here"
        raise PersonalizedBundleError(f"the personalised bundle failed its parity check ({why}); NOT published, "
                                      f"kept in {rejected}")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out, checks
