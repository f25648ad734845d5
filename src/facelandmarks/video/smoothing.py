"""Temporal smoothing of one face's landmarks with the One Euro filter.

The One Euro filter (Casiez, Roussel and Vogel, "1 Euro Filter: A Simple Speed-based Low-pass Filter
for Noisy Input in Interactive Systems", CHI 2012) is a first-order low-pass filter whose cutoff
frequency rises with the signal's speed: ``fc = min_cutoff + beta * |dx/dt|`` (the speed itself
low-passed at ``d_cutoff``). Still landmarks are smoothed strongly (jitter removed), moving ones get a
high cutoff (little lag). The filter itself is the authors' reference implementation, the
``oneeurofilter`` package (BSD-3, Inria); this module only runs one filter per coordinate.
"""

from __future__ import annotations

import numpy as np
from OneEuroFilter import OneEuroFilter

from facelandmarks.video.config import SmoothingParams

__all__ = ["LandmarkSmoother"]


class LandmarkSmoother:
    """One Euro filters for the ``K x 2`` coordinates of one track.

    Coordinates are filtered in units of ``scale`` (the face size in pixels), so ``beta`` is per face
    size per second whatever the face's size in the frame.

    Args:
        params: filter settings (``min_cutoff``, ``beta``, ``d_cutoff``; ``enabled`` is ignored here).
        num_points: K.
        fps: frame rate in Hz, used until timestamps give the actual rate.
        scale: face size in pixels (e.g. the side of the track's first box), > 0.
    Raises:
        ValueError: ``fps`` or ``scale`` not positive.
    """

    def __init__(self, params: SmoothingParams, num_points: int, fps: float, scale: float) -> None:
        if not fps > 0:
            raise ValueError(f"LandmarkSmoother: fps must be > 0, got {fps}")
        if not scale > 0:
            raise ValueError(f"LandmarkSmoother: scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.num_points = int(num_points)
        self._filters = [
            OneEuroFilter(float(fps), params.min_cutoff, params.beta, params.d_cutoff) for _ in range(2 * self.num_points)
        ]

    def __call__(self, landmarks: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        """Filter the next observation.

        Args:
            landmarks: ``(K, 2)`` points in pixels.
            timestamp: the frame's time in seconds (increasing); None: one frame at ``fps`` after the
                previous one.
        Returns:
            ``(K, 2) float32`` smoothed points in pixels (the first call returns its input).
        Raises:
            ValueError: wrong shape.
        """
        pts = np.asarray(landmarks, dtype=np.float64)
        if pts.shape != (self.num_points, 2):
            raise ValueError(f"LandmarkSmoother: expected ({self.num_points}, 2) landmarks, got {pts.shape}")
        flat = (pts / self.scale).ravel()
        # the reference implementation ignores a timestamp of exactly 0; shift by one second (only
        # differences of timestamps matter)
        t = None if timestamp is None else float(timestamp) + 1.0
        out = np.fromiter((f(float(v), t) for f, v in zip(self._filters, flat)), np.float64, count=flat.size)
        return (out.reshape(-1, 2) * self.scale).astype(np.float32)
