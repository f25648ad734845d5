"""InfAnFace ``labels.csv`` (Wan et al., "InfAnFace: Bridging the infant-adult domain gap in facial
landmark estimation in the wild", ICPR 2022, arXiv 2110.08935).

One row per image: ``image-set, filename, partition, subpartition, turned, occluded, expressive,
tilted, gt-x0, gt-y0, ..., gt-x67, gt-y67``; coordinates are 0-based pixels in the raw (EXIF
un-rotated) frame. Images live at ``images/<image-set>/<filename>`` beside the CSV.
"""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from facelandmarks.io.pts import AnnotationError

__all__ = ["INFANFACE_FLAGS", "infanface_groups", "read_infanface_labels"]

INFANFACE_FLAGS = ("turned", "occluded", "expressive", "tilted")


def read_infanface_labels(path: str | os.PathLike, num_points: int = 68) -> pd.DataFrame:
    """Read ``labels.csv``.

    Args:
        path: the CSV file.
        num_points: K; columns ``gt-x0..gt-x{K-1}`` and ``gt-y*`` must all be present.
    Returns:
        DataFrame with columns ``image_set, filename, partition, subpartition, image_path``
        (absolute), the four condition flags as nullable booleans, and ``landmarks`` holding
        ``(K, 2) float32`` arrays (0-based pixels; NaN kept where a cell is empty or not a number).
    Raises:
        AnnotationError: unreadable CSV or missing columns (the message lists them).
    """
    p = Path(path)
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise AnnotationError(f"{p}: not a readable CSV ({e})") from e
    xcols = [f"gt-x{i}" for i in range(num_points)]
    ycols = [f"gt-y{i}" for i in range(num_points)]
    required = ["image-set", "filename", *INFANFACE_FLAGS, *xcols, *ycols]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise AnnotationError(f"{p}: missing columns {missing[:6]}{'...' if len(missing) > 6 else ''}")
    xs = df[xcols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    ys = df[ycols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    pts = np.stack([xs, ys], axis=-1)
    out = pd.DataFrame(
        {
            "image_set": df["image-set"].astype(str),
            "filename": df["filename"].astype(str),
            "partition": df.get("partition", pd.Series([None] * len(df))).astype("string"),
            "subpartition": df.get("subpartition", pd.Series([None] * len(df))).astype("string"),
            "image_path": [str((p.parent / "images" / s / f).resolve()) for s, f in zip(df["image-set"], df["filename"])],
        }
    )
    for flag in INFANFACE_FLAGS:
        vals = pd.to_numeric(df[flag], errors="coerce")
        out[flag] = pd.array([None if pd.isna(v) else bool(v) for v in vals], dtype="boolean")
    out["landmarks"] = list(pts)
    return out


# --- source groups (for leak-free splits) ------------------------------------------------------------------

ADS_MAX_FRAME_GAP = 500
"""``ads`` stills less than this many frames apart chain into one source (see :func:`infanface_groups`)."""
SAME_SOURCE_MIN_CORR = 0.75
"""Neighbouring files whose 24x24 grey thumbnails correlate at least this much chain into one source."""


def _thumbnail(path: str | os.PathLike) -> np.ndarray:
    """``(576,) float32`` zero-mean, unit-norm 24x24 grey thumbnail of a photo (raw frame, no EXIF rotation)."""
    from PIL import Image  # local: only the grouping needs pixels

    with Image.open(path) as im:
        a = np.asarray(im.convert("L").resize((24, 24), Image.Resampling.BILINEAR), dtype=np.float32).ravel()
    a = a - a.mean()
    return a / (np.linalg.norm(a) + 1e-6)


def _ads_frame(filename: str) -> int | None:
    head = filename.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def infanface_groups(image_sets: list[str], filenames: list[str], image_paths: list[str]) -> list[str]:
    """Source group of each InfAnFace image: stills of one ad or one video share a group.

    InfAnFace names no source, so the rule is read off the data (checked by eye on contact sheets of
    every neighbouring pair whose thumbnails correlate above 0.5, and of the ads 43324 ... 46387):

    * ``ads/<frame>.Still<k>.jpg`` are stills of one reel of TV ads (every file 1024x576): ``<frame>``
      is the frame number in the reel and ``Still<k>`` is not unique (``794.Still005`` and
      ``1072.Still005``). Stills of one ad sit close together: ``45429.Still124`` ... ``45467.Still135``
      (gaps 2-18 frames) show one ad, ``19251`` ... ``20325`` (gaps 34-405) another. Sorted by frame,
      stills less than :data:`ADS_MAX_FRAME_GAP` frames apart (about 17 s at 30 fps, under one ad)
      chain into one group (42 chains; the similarity rule below links
      ``20325.Still076``-``22117.Still077`` too, one ad's end card): 104 stills -> 41 groups. Gaps
      inside one ad reach 484 frames (``45903``-``46387``) while gaps between ads go down to 217, so
      no threshold separates them exactly; the rule errs on merging (no leak, coarser groups): the
      largest group, ``43849`` ... ``46387``, joins five ads (18 stills).
    * ``youtube2/NNN.jpg`` and ``google2/g-NNNNN.jpg`` carry only a running number; clips of one video
      are neighbours (``youtube2/015``, ``016``, ``017``: same baby and room). Neighbours in name order
      whose 24x24 grey thumbnails correlate at least :data:`SAME_SOURCE_MIN_CORR` chain into one group
      (``016``-``017`` 0.96, ``015``-``016`` 0.78; the highest other pair in these two sets is 0.65):
      51 -> 51 ``google2`` groups, 55 -> 53 ``youtube2`` groups.
      The same similarity rule also links ``ads`` neighbours.

    Args:
        image_sets: ``image-set`` per image (``ads``, ``google2``, ``youtube2``).
        filenames: file name per image.
        image_paths: readable path per image (pixels are read for the similarity rule).
    Returns:
        one group id per image, ``<image-set>/<first file stem of the group>``, aligned with the inputs.
        A photo that cannot be read is linked by the frame rule only (the download stage reports it).
    """
    n = len(filenames)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    for s in sorted(set(image_sets)):
        idx = [i for i in range(n) if image_sets[i] == s]
        frames = {i: _ads_frame(filenames[i]) for i in idx}
        if s == "ads" and all(f is not None for f in frames.values()):
            order = sorted(idx, key=lambda i: (frames[i], filenames[i]))
            for a, b in pairwise(order):
                if frames[b] - frames[a] < ADS_MAX_FRAME_GAP:
                    union(a, b)
        else:
            order = sorted(idx, key=lambda i: filenames[i])
        thumbs = {}
        for i in order:
            try:
                thumbs[i] = _thumbnail(image_paths[i])
            except (OSError, ValueError):  # missing or broken photo: linked by the frame rule only;
                thumbs[i] = None  # the download stage's photo check reports it
        for a, b in pairwise(order):
            ta, tb = thumbs[a], thumbs[b]
            if ta is not None and tb is not None and float(ta @ tb) >= SAME_SOURCE_MIN_CORR:
                union(a, b)
    # name each group by its first member in (image set, sort order) so ids do not depend on input order
    first: dict[int, str] = {}
    for i in sorted(range(n), key=lambda i: (image_sets[i], _ads_frame(filenames[i]) or 0, filenames[i])):
        first.setdefault(find(i), f"{image_sets[i]}/{Path(filenames[i]).stem}")
    return [first[find(i)] for i in range(n)]
