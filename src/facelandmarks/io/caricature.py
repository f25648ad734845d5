"""``caricature`` landmark files: ``<n>.jpg`` + ``<n>.txt``, the ``.txt`` holding K lines ``x y`` (floats, no
header; 0-based pixels, as the data card ``../shared/datasets/README.md`` says to treat them). Each file is a
drawing of a different person.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facelandmarks.io.pts import AnnotationError, read_pts

__all__ = ["read_caricature_txt"]


def read_caricature_txt(path: str | os.PathLike, num_points: int = 68) -> np.ndarray:
    """Read one caricature ``.txt``.

    Args:
        path: the file.
        num_points: K expected.
    Returns:
        ``(K, 2) float32`` 0-based pixels (no offset applied).
    Raises:
        AnnotationError: not text, a line that is not two numbers, or not K points (the message names
            the file).
        FileNotFoundError: no such file.
    """
    p = Path(path)
    pts = read_pts(p, one_based=False)
    if len(pts) != num_points:
        raise AnnotationError(f"{p}: {len(pts)} points, expected {num_points}")
    return pts
