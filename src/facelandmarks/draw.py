"""Drawing faces on photos (OpenCV): box, score, and landmark contours by the scheme's groups.

Lines and dots are drawn with sub-pixel precision (OpenCV's ``shift``), anti-aliased, and sized
relative to each face so that small and large faces stay readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from facelandmarks.schemes import IBUG68, LandmarkScheme

__all__ = ["draw_faces", "GROUP_COLOURS"]

#: RGB colour per landmark group name (other groups and group-less schemes use ``DEFAULT_COLOUR``).
GROUP_COLOURS: dict[str, tuple[int, int, int]] = {
    "jaw": (255, 214, 0),
    "right_brow": (255, 120, 0),
    "left_brow": (255, 120, 0),
    "nose_bridge": (0, 200, 255),
    "lower_nose": (0, 200, 255),
    "right_eye": (0, 255, 120),
    "left_eye": (0, 255, 120),
    "outer_lip": (255, 60, 140),
    "inner_lip": (255, 60, 140),
}
DEFAULT_COLOUR = (0, 255, 120)
BOX_COLOUR = (60, 160, 255)
_SHIFT = 4  # sub-pixel bits for OpenCV drawing


def _fixed(points: np.ndarray) -> np.ndarray:
    """Pixel-centre coordinates -> OpenCV fixed-point integers (``shift`` bits)."""
    return np.round(np.asarray(points, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)


def draw_faces(
    image: np.ndarray,
    faces: Sequence[Any],
    scheme: LandmarkScheme = IBUG68,
    draw_box: bool = True,
    draw_score: bool = True,
    draw_points: bool = True,
) -> np.ndarray:
    """Draw faces on a copy of a photo.

    Args:
        image: ``(H, W, 3) uint8`` RGB photo.
        faces: objects with ``box`` ``(4,)`` (x0, y0, x1, y1), ``score`` and ``landmarks`` ``(K, 2)`` in photo
            pixels, e.g. :class:`facelandmarks.inference.Face`.
        scheme: landmark scheme; its ``groups`` are drawn as polylines (``closed_groups`` closed).
        draw_box: draw the detection box.
        draw_score: write the detection score above the box.
        draw_points: draw a dot on every landmark.
    Returns:
        ``(H, W, 3) uint8`` RGB copy with the drawing.
    Raises:
        ValueError: ``image`` is not ``(H, W, 3) uint8`` or a face's landmarks do not fit the scheme.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"draw_faces: expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
    out = np.ascontiguousarray(img.copy())
    for face in faces:
        pts = np.asarray(face.landmarks, dtype=np.float64)
        if pts.shape != (scheme.num_points, 2):
            raise ValueError(f"draw_faces: landmarks of shape {pts.shape} do not fit scheme {scheme.name!r}")
        box = np.asarray(face.box, dtype=np.float64)
        side = float(max(box[2] - box[0], box[3] - box[1], 1.0))
        thick = max(1, int(round(side / 120)))
        radius = max(1.0, side / 90)
        if draw_box:
            cv2.rectangle(out, tuple(_fixed(box[:2])), tuple(_fixed(box[2:])), BOX_COLOUR, thick, cv2.LINE_AA, _SHIFT)
        if draw_score:
            scale = max(0.4, side / 300)
            org = (int(box[0]), max(int(box[1]) - 4, int(12 * scale)))
            cv2.putText(out, f"{float(face.score):.2f}", org, cv2.FONT_HERSHEY_SIMPLEX, scale, BOX_COLOUR,
                        max(1, thick), cv2.LINE_AA)
        finite = np.all(np.isfinite(pts), axis=1)
        for name, idx in scheme.groups.items():
            sel = [i for i in idx if finite[i]]
            if len(sel) < 2:
                continue
            colour = GROUP_COLOURS.get(name, DEFAULT_COLOUR)
            cv2.polylines(out, [_fixed(pts[sel]).reshape(-1, 1, 2)], name in scheme.closed_groups, colour, thick,
                          cv2.LINE_AA, _SHIFT)
        if draw_points:
            colour_of = {i: GROUP_COLOURS.get(n, DEFAULT_COLOUR) for n, idx in scheme.groups.items() for i in idx}
            r = int(round(radius * (1 << _SHIFT)))
            for i, p in enumerate(pts):
                if finite[i]:
                    cv2.circle(out, tuple(_fixed(p)), r, colour_of.get(i, DEFAULT_COLOUR), -1, cv2.LINE_AA, _SHIFT)
    return out
