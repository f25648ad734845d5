"""``youtube_faces68`` keypoint CSVs (68-point frames of YouTube Faces, Wolf et al., "Face recognition in
unconstrained videos with matched background similarity", CVPR 2011; the 68-point labels come with the
data set's copy on the DVC remote, see ``../shared/datasets/README.md``).

Layout: ``<root>/training/`` + ``<root>/training_frames_keypoints.csv`` and ``<root>/test/`` +
``<root>/test_frames_keypoints.csv``. Each CSV has a header row (an empty cell, then ``0 ... 135``) and one
row per frame: ``file name, x0, y0, x1, y1, ..., x67, y67`` in pixels, treated as 0-based (the base is not
documented). Frames are named ``<Person_Name>_<k>.jpg``; the two folders reuse names for DIFFERENT frames
of the same people, so a frame is identified by ``<folder>/<file name>`` and a person by the name without
``_<k>.jpg`` (across both folders).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from facelandmarks.io.pts import AnnotationError

__all__ = ["YOUTUBE_FACES68_FOLDERS", "person_of", "read_youtube_faces68_csv"]

YOUTUBE_FACES68_FOLDERS = ("training", "test")


def person_of(filename: str) -> str:
    """``Luis_Fonsi_21.jpg`` -> ``Luis_Fonsi``: the person of a frame (name without ``_<k>.<ext>``)."""
    stem = Path(filename).stem
    m = re.fullmatch(r"(.+)_\d+", stem)
    return m.group(1) if m else stem


def read_youtube_faces68_csv(path: str | os.PathLike, num_points: int = 68) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Read one keypoint CSV.

    Args:
        path: ``<folder>_frames_keypoints.csv``.
        num_points: K; a row must hold a file name and exactly ``2 K`` numbers.
    Returns:
        ``(frames, bad_rows)``. ``frames`` has columns ``filename`` (str), ``person`` (str, see
        :func:`person_of`) and ``landmarks`` (``(K, 2) float32`` 0-based pixels), in file order.
        ``bad_rows`` lists ``(where, reason)`` for each skipped row (``where`` is ``<csv>:<line>``):
        wrong number of fields, an empty file name, or a coordinate that is empty or not a number.
    Raises:
        AnnotationError: the file is not a readable CSV or has no data row.
        FileNotFoundError: no such file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: keypoint CSV not found")
    bad: list[tuple[str, str]] = []
    ncol = 1 + 2 * num_points
    try:
        # header=0: the first row is ``,0,1,...``; a row with too many fields goes to the callback
        df = pd.read_csv(p, header=None, skiprows=1, names=list(range(ncol)), dtype=str, keep_default_na=False,
                         engine="python", on_bad_lines=lambda fields: bad.append(
                             (f"{p}", f"{len(fields)} fields, expected {ncol} (file name + {2 * num_points} coordinates)")
                         ) or None)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{p}: not a readable CSV ({e})") from e
    except pd.errors.EmptyDataError:
        df = pd.DataFrame(columns=list(range(ncol)))
    coords = df.iloc[:, 1:].apply(pd.to_numeric, errors="coerce")
    ok = coords.notna().all(axis=1) & (df[0].str.strip() != "")
    for i in np.flatnonzero(~ok.to_numpy()):
        name = df.iat[i, 0].strip() or "<no file name>"
        n_bad = int(coords.iloc[i].isna().sum())
        why = "empty file name" if not df.iat[i, 0].strip() else f"{n_bad} coordinates missing or not numbers"
        bad.append((f"{p}:{name}", why))
    good = df[ok.to_numpy()]
    if good.empty and not bad:
        raise AnnotationError(f"{p}: no data row")
    pts = coords[ok].to_numpy(np.float32).reshape(-1, num_points, 2)
    names = [n.strip() for n in good[0]]
    frames = pd.DataFrame({"filename": names, "person": [person_of(n) for n in names], "landmarks": list(pts)})
    return frames, bad
