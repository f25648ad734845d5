"""The one photo reader: from annotation rows to the pixels each face was annotated on.

Every stage that maps an annotated face to its pixels (crop, evaluate, register, the accuracy benchmark)
reads photos through :func:`iter_photo_images`, so all of them see the same pixels for the same face.

Data sets store photos differently (``../shared/datasets/README.md``):

* AFW keeps one file pair per annotated face, ``<photo>_<k>.jpg``; the files of one photo are
  byte-identical, so they are decoded once and all faces of the photo are on that one image (a detector
  sees every face of the photo at once);
* HELEN keeps a DIFFERENT image file per face of a photo (another crop of it): each face must be read from
  its own file, never from a sibling's;
* InfAnFace, YouTube-Faces frames and caricatures have one file per face.

Files are therefore grouped by content (SHA-1 of the bytes) within a photo: one :class:`PhotoImage` per
distinct content, holding exactly the faces whose ``image_path`` has that content.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facelandmarks.io.images import DEFAULT_MAX_PIXELS, ImageReadError, decode_image

__all__ = ["PhotoImage", "group_photo_files", "read_photo_files", "iter_photo_images"]

log = logging.getLogger(__name__)


@dataclass
class PhotoImage:
    """One decoded image and the annotated faces that lie on it.

    Attributes:
        photo_id: the photo the files belong to.
        paths: the files with this content (AFW: several byte-identical copies; otherwise one).
        faces: the annotation rows whose ``image_path`` is one of ``paths`` (row order of the input).
        image: ``(H, W, 3) uint8`` RGB in the raw pixel frame (EXIF not applied), or ``None`` when unreadable.
        error: why it could not be read (names the file), else ``None``.
    """

    photo_id: str
    paths: list[str]
    faces: pd.DataFrame
    image: np.ndarray | None
    error: str | None = None


def group_photo_files(paths: list[str]) -> list[tuple[list[str], bytes | None, str | None]]:
    """Group the files of one photo by content (SHA-1 of the bytes), reading each file once, decoding nothing.

    Args:
        paths: image files of one photo (duplicates allowed; order kept).
    Returns:
        one ``(paths, None, error)`` per file that cannot be read, then one ``(paths, bytes, None)`` per
        distinct content in order of first appearance: the images :func:`read_photo_files` yields, in its
        order; every input path appears exactly once.
    """
    by_hash: dict[str, list[str]] = {}
    data: dict[str, bytes] = {}
    out: list[tuple[list[str], bytes | None, str | None]] = []
    for p in dict.fromkeys(str(p) for p in paths):
        try:
            raw = Path(p).read_bytes()
        except OSError as e:
            out.append(([p], None, f"{p}: cannot be read ({e.strerror or e})"))
            continue
        h = hashlib.sha1(raw).hexdigest()
        if h not in by_hash:
            by_hash[h] = []
            data[h] = raw
        by_hash[h].append(p)
    return out + [(ps, data[h], None) for h, ps in by_hash.items()]


def read_photo_files(paths: list[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> list[tuple[np.ndarray | None, str | None, list[str]]]:
    """Read the files of one photo, decoding byte-identical copies once (:func:`group_photo_files`).

    Args:
        paths: image files of one photo (duplicates allowed; order kept).
        max_pixels: decompression-bomb guard, see :func:`facelandmarks.io.images.decode_image`.
    Returns:
        one ``(image (H, W, 3) uint8, None, paths)`` per distinct readable content, one
        ``(None, error, paths)`` per unreadable content or file; every input path appears exactly once.
    """
    out: list[tuple[np.ndarray | None, str | None, list[str]]] = []
    for ps, raw, error in group_photo_files(paths):
        if raw is None:
            out.append((None, error, ps))
            continue
        try:
            if not raw:
                raise ImageReadError(f"{ps[0]}: empty file")
            out.append((decode_image(raw, source=ps[0], max_pixels=max_pixels, apply_exif=False), None, ps))
        except ImageReadError as e:
            out.append((None, str(e), ps))
    return out


def _photo_images(photo_id: str, g: pd.DataFrame, max_pixels: int) -> list[PhotoImage]:
    out = []
    for img, err, paths in read_photo_files(list(g["image_path"]), max_pixels):
        out.append(PhotoImage(str(photo_id), paths, g[g["image_path"].astype(str).isin(paths)], img, err))
    return out


def iter_photo_images(
    faces: pd.DataFrame,
    workers: int = 0,
    prefetch: int = 8,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[PhotoImage]:
    """Yield every distinct image of the photos of ``faces``, each with the faces annotated on it.

    Photos come in order of first appearance of their ``photo_id`` in ``faces``; unreadable images are
    yielded too (``image=None``, ``error`` set) so that callers count and report them.

    Args:
        faces: annotation rows with ``photo_id`` and ``image_path`` (:mod:`facelandmarks.data.table`).
        workers: threads decoding photos ahead of the consumer (0: read in the calling thread).
        prefetch: photos read ahead when ``workers > 0``.
        max_pixels: decompression-bomb guard.
    Yields:
        :class:`PhotoImage`; every row of ``faces`` is in exactly one of them.
    Raises:
        KeyError: ``faces`` lacks ``photo_id`` or ``image_path``.
    """
    for col in ("photo_id", "image_path"):
        if col not in faces.columns:
            raise KeyError(f"annotation rows lack the column {col!r}")
    groups = list(faces.groupby("photo_id", sort=False))
    if workers <= 0:
        for pid, g in groups:
            yield from _photo_images(pid, g, max_pixels)
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        pending: list[Future] = []
        it = iter(groups)
        for pid, g in it:
            pending.append(pool.submit(_photo_images, pid, g, max_pixels))
            if len(pending) >= prefetch:
                break
        for pid, g in it:
            done = pending.pop(0)
            pending.append(pool.submit(_photo_images, pid, g, max_pixels))
            yield from done.result()
        for f in pending:
            yield from f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
