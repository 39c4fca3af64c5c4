"""Where crossl_edge keeps downloaded data sets and parsed arrays, and the .npz cache of parsed files.

Layout (the root is `$CROSSL_EDGE_CACHE`, default `~/.cache/crossl_edge`):

    <root>/datasets/<name>/            verified downloads (see download.py)
    <root>/parsed/<name>/<source id>/  parsed arrays, one .npz per unit (subject, or the whole set)

Parsing the published text formats is the slow part of loading (CSV and JSON), so loaders store
what they parsed as uncompressed .npz next to a *key* describing the source files (path, size,
mtime). A changed, replaced or touched source file changes the key and the entry is parsed again;
a stale entry is never returned. Writes go to a temporary file first and are renamed into place,
so a killed process leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)

#: Bump when the layout of parsed arrays changes, so old cache entries are ignored.
CACHE_FORMAT = 1

_KEY = "__cache_key__"


def cache_root() -> Path:
    """`$CROSSL_EDGE_CACHE` if set, else `~/.cache/crossl_edge`."""
    env = os.environ.get("CROSSL_EDGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crossl_edge"


def datasets_cache_dir() -> Path:
    """Folder holding downloaded data sets, one `<name>/` each."""
    return cache_root() / "datasets"


def parsed_cache_dir(name: str, source_root: str | Path) -> Path:
    """Folder for parsed arrays of data set `name` read from `source_root` (one folder per source copy)."""
    resolved = str(Path(source_root).resolve())
    tag = hashlib.sha1(resolved.encode("utf-8")).hexdigest()[:12]
    return cache_root() / "parsed" / name / tag


def files_key(paths: Iterable[str | Path], extra: str = "") -> str:
    """A key that changes when any file's path, size or modification time changes."""
    parts = [f"format={CACHE_FORMAT}", extra]
    for p in paths:
        st = os.stat(p)
        parts.append(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def load_cached(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays stored at `path` if the entry exists and was written for `key`; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if _KEY not in z.files or str(z[_KEY]) != key:
                log.debug("cache entry %s is stale", path)
                return None
            return {k: z[k] for k in z.files if k != _KEY}
    except (OSError, ValueError) as e:  # truncated or foreign file: parse again
        log.warning("ignoring unreadable cache entry %s (%s)", path, e)
        return None


def save_cached(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Store `arrays` at `path` under `key` atomically; a failure to write only logs a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays, **{_KEY: np.array(key)})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:  # read-only home, full disk: loading still works, only slower next time
        log.warning("could not write cache entry %s (%s); set CROSSL_EDGE_CACHE to a writable folder", path, e)

