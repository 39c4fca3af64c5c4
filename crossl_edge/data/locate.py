"""Find a data set's folder on disk, downloading it only as the last resort.

Order of places looked:
1. the `root` argument (from Python, or `--data` on a command line): either a folder that contains
   `<name>/`, or the data set folder itself. An explicit root is authoritative: if it does not hold the
   data set, that is an error, not a reason to look elsewhere.
2. `$CROSSL_EDGE_DATA`: a folder that contains `<name>/` (tests point it at ../shared/datasets).
3. the download cache `$CROSSL_EDGE_CACHE/datasets/<name>/` (default `~/.cache/crossl_edge/datasets`).
4. a checksummed download of the pinned archive into that cache (download.py), if `download` is true.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from crossl_edge.data.cache import datasets_cache_dir
from crossl_edge.data.download import ARCHIVES, fetch_dataset
from crossl_edge.data.types import DataError

log = logging.getLogger(__name__)

#: A path inside a data set folder that identifies it (so a wrong folder is caught here, not in a parser).
MARKERS: dict[str, str] = {
    "stress-predict": "Raw_data",
    "lis-emg-imu": "Dataset",
    "byo": "dataset.json",
}


def _is_dataset(folder: Path, name: str) -> bool:
    marker = MARKERS.get(name)
    return folder.is_dir() and (marker is None or (folder / marker).exists())


def _how_to(name: str) -> str:
    return (
        f"set CROSSL_EDGE_DATA to a folder that contains {name}/ or pass its location (--data on the command "
        "line, root= from Python)"
    )


def find_dataset_root(name: str, root: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding data set `name` (e.g. the one containing `Raw_data/` for stress-predict).

    Raises DataError listing every place looked when the data set is nowhere and `download` is false
    (or no download is known for `name`).
    """
    marker = MARKERS.get(name)
    what = f"{name}/" + (f" (with {marker} inside)" if marker else "")
    if root is not None:
        p = Path(root).expanduser()
        if _is_dataset(p / name, name):
            return p / name
        if _is_dataset(p, name) and (marker is not None or p.name == name):
            return p
        raise DataError(
            f"data set {name!r} not found at {p}: expected that folder to contain {what} or to be it; {_how_to(name)}"
        )

    looked: list[str] = []
    env = os.environ.get("CROSSL_EDGE_DATA")
    if env:
        p = Path(env).expanduser() / name
        if _is_dataset(p, name):
            return p
        looked.append(f"{p} (from CROSSL_EDGE_DATA)")
    else:
        looked.append("CROSSL_EDGE_DATA (not set)")

    cached = datasets_cache_dir() / name
    if _is_dataset(cached, name):
        return cached
    looked.append(f"{cached} (download cache; CROSSL_EDGE_CACHE moves it)")

    if download and name in ARCHIVES:
        log.info("data set %r not found locally (%s); downloading it", name, "; ".join(looked))
        return fetch_dataset(name)
    reason = "downloading is off" if name in ARCHIVES else "no download is known for it"
    raise DataError(f"data set {name!r} ({what}) not found; looked in: {'; '.join(looked)}; {reason}. {_how_to(name)}")
