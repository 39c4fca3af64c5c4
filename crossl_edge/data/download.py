"""Checksummed download of a published data set archive into the cache.

GitHub builds its `/archive/<commit>.zip` files on the fly: the same commit can give zips whose bytes
differ (timestamps, compression, member order), so a sha256 of the zip would break without the data
changing. What is pinned instead is a *tree digest* of the extracted content the loader reads (see
`tree_digest`). A download is unpacked into a temporary folder inside the cache, its tree digest is
compared with the pinned one, and only a matching tree is renamed into `<cache>/<name>/` (an atomic
rename on one file system), so the cache never holds a partial or unverified copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from crossl_edge.data.cache import datasets_cache_dir
from crossl_edge.data.types import DataError

log = logging.getLogger(__name__)

#: Written into a verified download; its content is the tree digest the copy was checked against.
MARKER = ".crossl_edge_tree_sha256"


@dataclass(frozen=True)
class Archive:
    """Where a data set's published files come from and what their content must hash to."""

    url: str
    strip_prefix: str  # top folder inside the zip, removed on extraction
    tree_sha256: str  # tree_digest(<extracted folder>, include) of the published commit
    include: tuple[str, ...]  # the paths (files or folders, relative) the loader reads


#: Pinned archives. The digests were computed from the copies in ../shared/datasets, which are the
#: published files of these commits (see each SOURCE.md); tests check that they still match.
ARCHIVES: dict[str, Archive] = {
    "stress-predict": Archive(
        url="https://github.com/italha-d/Stress-Predict-Dataset/archive/f49d2eae603f90c3f0140fbbbae7c0480d651023.zip",
        strip_prefix="Stress-Predict-Dataset-f49d2eae603f90c3f0140fbbbae7c0480d651023/",
        tree_sha256="86c4371256b5a1a02b52df69fb5c599ec256b18bafbdd8e1c9a6198a656c5876",
        include=("Raw_data", "Processed_data/Improved_All_Combined_hr_rsp_binary.csv"),
    ),
    "lis-emg-imu": Archive(
        url=(
            "https://github.com/airtlab/An-EMG-and-IMU-Dataset-for-the-Italian-Sign-Language-Alphabet/archive/"
            "86d59a12bff8629201f5a7c9cd498ad93299ac9e.zip"
        ),
        strip_prefix=(
            "An-EMG-and-IMU-Dataset-for-the-Italian-Sign-Language-Alphabet-86d59a12bff8629201f5a7c9cd498ad93299ac9e/"
        ),
        tree_sha256="3dedc26798ff8330b1877d64a7adb4e3f22564e33da284a1112dbd3dea6e33f9",
        include=("Dataset",),
    ),
}


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tree_digest(folder: str | Path, include: Sequence[str] = ()) -> str:
    """sha256 over the sorted lines "<relative posix path> <sha256 of file>\\n" of the files under `include`.

    `include` names files or folders relative to `folder` (folders are taken recursively); empty means
    the whole folder. Only what the loader reads is included, so extra files in a copy (a README, the
    download marker) do not change the digest, while any changed, missing or added data file does.
    """
    folder = Path(folder)
    roots = [folder / p for p in include] if include else [folder]
    files: set[Path] = set()
    for r in roots:
        if r.is_file():
            files.add(r)
        elif r.is_dir():
            files.update(p for p in r.rglob("*") if p.is_file())
        else:
            raise DataError(f"{folder} lacks {r.relative_to(folder).as_posix()!r}, which the data set must contain")
    lines = sorted(f"{p.relative_to(folder).as_posix()} {_sha256_file(p)}\n" for p in files if p.name != MARKER)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def _download(url: str, dest: Path, name: str, timeout: float) -> None:
    """Stream `url` into `dest`, with a tqdm bar when the server says the size."""
    request = urllib.request.Request(url, headers={"User-Agent": "crossl_edge"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
            size = response.headers.get("Content-Length")
            total = int(size) if size and size.isdigit() else None
            bar = None
            if total:
                try:
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}", disable=None)
                except ImportError:  # tqdm is optional: fall back to a log line
                    bar = None
            log.info("downloading %s from %s (%s bytes)", name, url, total if total else "unknown")
            try:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DataError(
            f"could not download data set {name!r} from {url}: {e}. Without network access, download that zip "
            f"elsewhere, unpack it so that <folder>/{name}/ holds its files, and set CROSSL_EDGE_DATA=<folder> "
            "(or pass --data/root=)"
        ) from e


def _extract(zip_path: Path, out: Path, strip_prefix: str) -> int:
    """Unpack the members under `strip_prefix` into `out`, refusing paths that escape it. Returns files written."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise DataError(f"the downloaded file {zip_path} is not a valid zip archive ({e}); try again") from e
    written = skipped = 0
    with zf:
        for info in zf.infolist():
            if not info.filename.startswith(strip_prefix):
                skipped += 1
                continue
            rel = PurePosixPath(info.filename[len(strip_prefix):])
            if info.is_dir() or not rel.parts:
                continue
            if rel.is_absolute() or ".." in rel.parts:
                raise DataError(f"refusing archive member {info.filename!r}: its path leaves the extraction folder")
            target = out.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            written += 1
    if written == 0:
        raise DataError(f"the archive {zip_path.name} holds no files under {strip_prefix!r}; is the URL right?")
    if skipped:
        log.info("ignored %d archive members outside %r", skipped, strip_prefix)
    return written


def fetch_archive(
    url: str,
    cache_dir: str | Path,
    name: str,
    tree_sha256: str,
    strip_prefix: str = "",
    include: Sequence[str] = (),
    timeout: float = 60.0,
) -> Path:
    """Download the zip at `url`, verify its extracted content, and install it as `<cache_dir>/<name>/`.

    The check is `tree_digest(extracted, include) == tree_sha256`, not a hash of the zip (GitHub's
    archive zips are generated on the fly and are not byte-stable). On a mismatch the temporary
    folder is deleted and DataError says the expected and the obtained digest. A folder already
    installed by this function (it carries a marker with the same digest) is returned without any
    network access.
    """
    cache_dir = Path(cache_dir)
    dest = cache_dir / name
    if dest.is_dir():
        marker = dest / MARKER
        if marker.is_file() and marker.read_text().strip() == tree_sha256:
            log.info("using cached %s at %s", name, dest)
            return dest
        raise DataError(
            f"{dest} exists but is not a copy verified against tree digest {tree_sha256}; delete that folder to "
            "download it again, or point CROSSL_EDGE_DATA at a folder holding the data set"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{name}-download-"))
    try:
        zip_path = tmp / "archive.zip"
        _download(url, zip_path, name, timeout)
        tree = tmp / "tree"
        n = _extract(zip_path, tree, strip_prefix)
        zip_path.unlink()
        got = tree_digest(tree, include)
        if got != tree_sha256:
            raise DataError(
                f"downloaded {name!r} from {url} does not match its pinned content: expected tree digest "
                f"{tree_sha256}, got {got}. The download was discarded; the archive may have changed or been "
                "tampered with"
            )
        (tree / MARKER).write_text(tree_sha256 + "\n")
        try:
            os.replace(tree, dest)
        except OSError:
            # another process installed it meanwhile: accept its copy if it carries the same digest
            marker = dest / MARKER
            if not (marker.is_file() and marker.read_text().strip() == tree_sha256):
                raise
        log.info("installed %s (%d files, tree digest %s) at %s", name, n, got, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fetch_dataset(name: str, cache_dir: str | Path | None = None) -> Path:
    """Download the pinned archive of a known data set (see ARCHIVES) into the cache, or return the cached copy."""
    if name not in ARCHIVES:
        raise DataError(f"no download is known for data set {name!r}; downloadable: {', '.join(sorted(ARCHIVES))}")
    a = ARCHIVES[name]
    return fetch_archive(
        a.url,
        datasets_cache_dir() if cache_dir is None else cache_dir,
        name,
        a.tree_sha256,
        strip_prefix=a.strip_prefix,
        include=a.include,
    )
