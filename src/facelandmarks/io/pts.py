"""300-W ``.pts`` landmark files.

Format (iBUG 300-W, Sagonas et al. 2013)::

    version: 1
    n_points:  68
    {
    x y
    ...
    }

Coordinates are **1-based** pixels in the official 300-W convention; :func:`read_pts` returns
0-based pixels (subtracts 1). Some public copies drop the header and keep only the ``x y`` lines;
both forms are accepted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

__all__ = ["AnnotationError", "read_pts", "parse_pts", "write_pts"]


class AnnotationError(ValueError):
    """An annotation file is malformed; the message names the file and what is wrong."""


_NUM = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$|^[-+]?(nan|inf)$", re.IGNORECASE)


def parse_pts(text: str, source: str = "<pts>", one_based: bool = True) -> np.ndarray:
    """Parse the text of a ``.pts`` file.

    Args:
        text: file content.
        source: name used in error messages.
        one_based: the file uses 1-based pixels (300-W); subtract 1.
    Returns:
        ``(K, 2) float32`` 0-based pixels. K is taken from ``n_points`` when the header is present,
        else from the number of coordinate lines. NaN values are kept (validation reports them).
    Raises:
        AnnotationError: a line that is not two numbers, a count that disagrees with ``n_points``,
            an unclosed ``{``, or no points at all.
    """
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    n_declared: int | None = None
    body = lines
    if lines and lines[0].lower().startswith("version"):
        header: dict[str, str] = {}
        i = 0
        while i < len(lines) and lines[i] != "{":
            if ":" not in lines[i]:
                raise AnnotationError(f"{source}: bad header line {lines[i]!r}")
            k, v = lines[i].split(":", 1)
            header[k.strip().lower()] = v.strip()
            i += 1
        if i == len(lines):
            raise AnnotationError(f"{source}: header without '{{'")
        try:
            n_declared = int(header["n_points"])
        except (KeyError, ValueError):
            raise AnnotationError(f"{source}: header lacks a valid n_points") from None
        try:
            end = lines.index("}", i + 1)
        except ValueError:
            raise AnnotationError(f"{source}: '{{' without closing '}}'") from None
        body = lines[i + 1 : end]
    pts = []
    for ln in body:
        parts = ln.split()
        if len(parts) != 2 or not all(_NUM.match(p) for p in parts):
            raise AnnotationError(f"{source}: expected 'x y', got {ln!r}")
        pts.append((float(parts[0]), float(parts[1])))
    if not pts:
        raise AnnotationError(f"{source}: no points")
    if n_declared is not None and n_declared != len(pts):
        raise AnnotationError(f"{source}: header says n_points={n_declared} but {len(pts)} points follow")
    arr = np.asarray(pts, dtype=np.float64)
    if one_based:
        arr -= 1.0
    return arr.astype(np.float32)


def read_pts(path: str | os.PathLike, one_based: bool = True) -> np.ndarray:
    """Read a ``.pts`` file; see :func:`parse_pts`.

    Raises:
        AnnotationError: unreadable (not UTF-8/ASCII) or malformed file.
        FileNotFoundError: no such file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{p}: not a text file ({e})") from e
    return parse_pts(text, source=str(p), one_based=one_based)


def write_pts(path: str | os.PathLike, landmarks: np.ndarray, one_based: bool = True) -> None:
    """Write ``(K, 2)`` 0-based points as a 300-W ``.pts`` file (1-based on disk by default)."""
    pts = np.asarray(landmarks, dtype=np.float64) + (1.0 if one_based else 0.0)
    lines = ["version: 1", f"n_points:  {len(pts)}", "{"]
    lines += [f"{x:.6f} {y:.6f}" for x, y in pts]
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n")
