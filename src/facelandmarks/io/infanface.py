"""InfAnFace ``labels.csv`` (Wan et al., "InfAnFace: Bridging the infant-adult domain gap in facial
landmark estimation in the wild", ICPR 2022, arXiv 2110.08935).

One row per image: ``image-set, filename, partition, subpartition, turned, occluded, expressive,
tilted, gt-x0, gt-y0, ..., gt-x67, gt-y67``; coordinates are 0-based pixels in the raw (EXIF
un-rotated) frame. Images live at ``images/<image-set>/<filename>`` beside the CSV.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from facelandmarks.io.pts import AnnotationError

__all__ = ["INFANFACE_FLAGS", "read_infanface_labels"]

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
