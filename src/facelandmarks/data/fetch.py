"""Fetching data set archives from a URL: resumable, retried, checksummed, extracted safely.

Used for users with internet (e.g. dlib's public ``ibug_300W_large_face_landmark_dataset.tar.gz``).
Guarantees:

* a partial download is kept as ``<name>.part`` and resumed with an HTTP ``Range`` request;
* transient failures (connection reset, timeouts, 5xx) are retried with exponential back-off;
* the sha256 is verified before the archive is used; a mismatch deletes the file and raises;
* extraction rejects entries that escape the target folder (``../``, absolute paths) and links that
  point outside it (Python's ``tarfile`` ``data`` filter, PEP 706; explicit checks for zip);
* the target folder appears only complete (extracted into a temporary folder, then renamed).
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import requests
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tqdm import tqdm

from facelandmarks.fsutil import atomic_dir, sha256_file

__all__ = ["FetchError", "ChecksumError", "UnsafeArchiveError", "download", "sha256_file", "extract", "fetch_archive"]

CHUNK = 1 << 20
NET_CHUNK = 1 << 16  # small, so that a dropped connection loses little of what arrived


class FetchError(RuntimeError):
    """A download failed for good (after retries, or a 4xx answer)."""


class ChecksumError(FetchError):
    """A downloaded file's sha256 differs from the expected one."""


class UnsafeArchiveError(FetchError):
    """An archive holds an entry or link that would land outside the target folder."""


class _Transient(Exception):
    """A failure worth retrying."""




def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
            if r.status_code == 416:  # range not satisfiable: we already have it all
                return
            if r.status_code >= 500:
                raise _Transient(f"{url}: HTTP {r.status_code}")
            if r.status_code >= 400:
                raise FetchError(f"{url}: HTTP {r.status_code} {r.reason}")
            if start and r.status_code != 206:  # server ignored Range: start over
                start = 0
            total = r.headers.get("Content-Length")
            total = int(total) + start if total is not None else None
            mode = "ab" if start else "wb"
            with open(part, mode) as f, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar:
                for chunk in r.iter_content(NET_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            if total is not None and part.stat().st_size < total:
                raise _Transient(f"{url}: connection closed after {part.stat().st_size} of {total} bytes")
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        raise _Transient(f"{url}: {type(e).__name__}: {e}") from e


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None,
    retries: int = 5,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download, and verify its sha256.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: final file path; the partial file is ``dest + ".part"``.
        sha256: expected hex digest; ``None`` skips verification (not recommended).
        retries: attempts for transient failures (exponential back-off, 1 s to 30 s).
        timeout: seconds per connect/read.
    Returns:
        ``dest``. If it already exists with the right checksum nothing is fetched.
    Raises:
        FetchError: a 4xx answer, or transient failures outlasting ``retries``.
        ChecksumError: the content's sha256 differs (the bad file is deleted).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256.lower()):
        return dest
    part = dest.with_name(dest.name + ".part")
    if urlparse(url).scheme == "file":
        src = Path(urlparse(url).path)
        if not src.is_file():
            raise FetchError(f"{url}: no such file")
        part.write_bytes(src.read_bytes())
    else:
        fetch = retry(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(max(1, retries)),
            wait=wait_exponential(multiplier=1, min=1, max=30),
            reraise=True,
        )(_fetch_once)
        try:
            fetch(url, part, timeout, progress)
        except _Transient as e:
            raise FetchError(f"{e} (gave up after {retries} attempts; partial file kept for resume: {part})") from e
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256.lower():
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{url}: sha256 {got} differs from the expected {sha256.lower()}; file deleted")
    os.replace(part, dest)
    return dest


def _check_zip_member(name: str, target: Path) -> None:
    pp = PurePosixPath(name)
    if pp.is_absolute() or ".." in pp.parts or (target / pp).resolve().is_relative_to(target.resolve()) is False:
        raise UnsafeArchiveError(f"zip entry {name!r} would be written outside {target}")


def extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract a ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz`` or ``.zip`` archive safely.

    The folder ``target`` appears only when every entry has been extracted; an unsafe entry (path
    escaping ``target``, absolute path, link pointing outside, device file) aborts the whole
    extraction and leaves ``target`` untouched.

    Raises:
        UnsafeArchiveError: an unsafe entry.
        FetchError: not a supported or readable archive.
    """
    archive, target = Path(archive), Path(target)
    with atomic_dir(target) as tmp:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                try:
                    tf.extractall(tmp, filter="data")
                except tarfile.FilterError as e:
                    raise UnsafeArchiveError(f"{archive}: unsafe entry: {e}") from e
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_zip_member(info.filename, tmp)
                    # zip symlinks are stored with the S_IFLNK mode; refuse them outright
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise UnsafeArchiveError(f"{archive}: zip entry {info.filename!r} is a symbolic link")
                zf.extractall(tmp)
        else:
            raise FetchError(f"{archive}: not a tar or zip archive")
    return target


def fetch_archive(url: str, sha256: str | None, cache_dir: str | os.PathLike, target: str | os.PathLike,
                  retries: int = 5, progress: bool = True) -> Path:
    """Download an archive into ``cache_dir`` (resumable, verified) and extract it to ``target``.

    Does nothing when ``target`` already exists (delete it to re-extract).

    Returns:
        ``target``.
    Raises:
        FetchError, ChecksumError, UnsafeArchiveError: see :func:`download` and :func:`extract`.
    """
    target = Path(target)
    if target.exists():
        return target
    name = Path(urlparse(url).path).name or "archive"
    archive = download(url, Path(cache_dir) / name, sha256, retries=retries, progress=progress)
    return extract(archive, target)
