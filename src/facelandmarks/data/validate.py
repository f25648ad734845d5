"""Validation of annotated faces before they enter the table.

A face is invalid, reported with its file and reason, and left out when:

* its annotation has the wrong number of points for the scheme;
* a visible point is NaN or infinite;
* a point lies further outside its photo than ``max_outside`` times the photo's longer side;
* its photo cannot be read (missing, truncated, not an image).

Nothing here raises on bad data: problems become rows of the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Problem", "check_landmarks"]


@dataclass
class Problem:
    """One rejected face (or file): ``file`` names it, ``reason`` says what is wrong."""

    dataset: str
    file: str
    reason: str
    kind: str  # short category used for counts: wrong_point_count, nan, outside, unreadable_image, parse_error

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "file": self.file, "kind": self.kind, "reason": self.reason}


def check_landmarks(
    landmarks: np.ndarray,
    visible: np.ndarray,
    num_points: int,
    width: int,
    height: int,
    max_outside: float,
) -> tuple[str, str] | None:
    """Check one face's points.

    Args:
        landmarks: ``(K', 2)`` 0-based pixels.
        visible: ``(K',)`` bool.
        num_points: K expected by the scheme.
        width, height: photo size in pixels.
        max_outside: tolerance outside the photo, as a fraction of ``max(width, height)``.
    Returns:
        ``None`` when valid, else ``(kind, reason)``.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] != num_points:
        return "wrong_point_count", f"{pts.shape[0] if pts.ndim == 2 else pts.size} points, the scheme has {num_points}"
    vis = np.asarray(visible, dtype=bool)
    bad = ~np.isfinite(pts[vis]).all(axis=1)
    if bad.any():
        idx = np.flatnonzero(vis)[bad]
        return "nan", f"non-finite coordinates at points {idx[:8].tolist()}"
    tol = max_outside * max(width, height)
    p = pts[vis]
    out = (p[:, 0] < -tol) | (p[:, 0] > width - 1 + tol) | (p[:, 1] < -tol) | (p[:, 1] > height - 1 + tol)
    if out.any():
        i = int(np.flatnonzero(vis)[out][0])
        return "outside", (
            f"{int(out.sum())} points far outside the {width}x{height} photo "
            f"(e.g. point {i} at ({pts[i, 0]:.1f}, {pts[i, 1]:.1f}))"
        )
    return None
