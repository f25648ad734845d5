"""Square face crops as exact affine maps between photo and crop pixels.

Convention (the annotation table's): pixel centres are at integer coordinates, so pixel ``i`` covers
``[i - 0.5, i + 0.5]`` and an image of ``W`` pixels spans ``[-0.5, W - 0.5]``. A square of side
``L`` photo pixels with top-left edge ``(x0, y0)`` maps onto a crop of ``S`` pixels as::

    u = k * (x - x0) - 0.5,   v = k * (y - y0) - 0.5,   k = S / L

so the square's edges land on the crop's edges ``-0.5`` and ``S - 0.5``. The same convention is the
one ``cv2.warpAffine`` samples with, so warping and point mapping agree exactly.

Affines are ``(2, 3) float64`` matrices ``M`` acting on column vectors ``(x, y, 1)``.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "square_box",
    "square_to_affine",
    "invert_affine",
    "map_points",
    "warp_crop",
    "crop_square",
]


def square_box(box: np.ndarray, scale: float, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Square around a box: side ``scale * max(w, h)``, centred on the box centre.

    Args:
        box: ``(4,)`` or ``(N, 4)`` x0, y0, x1, y1 in photo pixels (edges, as detectors return).
        scale: side of the square relative to the box's longer side (e.g. 1.3).
        offset: ``(dx, dy)`` shift of the centre in units of the box's longer side (positive down/right).
    Returns:
        ``(4,)`` or ``(N, 4) float64`` square x0, y0, x1, y1.
    Raises:
        ValueError: a box with non-finite values or no positive extent, or ``scale <= 0``.
    """
    b = np.asarray(box, dtype=np.float64)
    if scale <= 0:
        raise ValueError(f"square_box: scale must be positive, got {scale}")
    w = b[..., 2] - b[..., 0]
    h = b[..., 3] - b[..., 1]
    if not np.all(np.isfinite(b)) or np.any(np.maximum(w, h) <= 0):
        raise ValueError(f"square_box: degenerate box {b.tolist()}")
    side = np.maximum(w, h)
    cx = (b[..., 0] + b[..., 2]) / 2 + offset[0] * side
    cy = (b[..., 1] + b[..., 3]) / 2 + offset[1] * side
    half = scale * side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=-1)


def square_to_affine(square: np.ndarray, size: int) -> np.ndarray:
    """Affine mapping photo pixels to crop pixels for a square cut to ``size x size``.

    Args:
        square: ``(4,)`` x0, y0, x1, y1 of the square (edges, photo pixels); x1 - x0 is used as the side.
        size: crop side S in pixels.
    Returns:
        ``(2, 3) float64`` photo -> crop affine (see the module docstring for the formula).
    Raises:
        ValueError: the square has no positive side.
    """
    x0, y0, x1, _ = (float(v) for v in np.asarray(square, dtype=np.float64))
    side = x1 - x0
    if not side > 0:
        raise ValueError(f"square_to_affine: square {np.asarray(square).tolist()} has no positive side")
    k = size / side
    return np.array([[k, 0.0, -k * x0 - 0.5], [0.0, k, -k * y0 - 0.5]], dtype=np.float64)


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine, in float64.

    Raises:
        ValueError: the linear part is singular.
    """
    m = np.asarray(affine, dtype=np.float64)
    lin = m[:, :2]
    det = np.linalg.det(lin)
    if abs(det) < 1e-12:
        raise ValueError("invert_affine: singular affine")
    inv = np.linalg.inv(lin)
    return np.concatenate([inv, -inv @ m[:, 2:]], axis=1)


def map_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply an affine to points.

    Args:
        points: ``(..., 2)`` pixels.
        affine: ``(2, 3)``.
    Returns:
        ``(..., 2) float64`` mapped points (NaN stays NaN).
    """
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(affine, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def warp_crop(
    image: np.ndarray,
    photo_to_crop: np.ndarray,
    size: int,
    border_value: int = 0,
    anti_alias: bool = True,
) -> np.ndarray:
    """Cut a crop out of a photo with ``cv2.warpAffine`` (bilinear, constant padding outside the photo).

    When the crop shrinks the photo (scale ``k < 1``) and ``anti_alias`` is set, the region under the
    crop is first low-pass filtered with a Gaussian of sigma ``(1/k - 1) / 2`` (the anti-aliasing
    rule of ``skimage.transform.rescale``); the blur is centred, so it moves no point.

    Args:
        image: ``(H, W, 3) uint8`` photo.
        photo_to_crop: ``(2, 3)`` affine from photo to crop pixels (e.g. :func:`square_to_affine`).
        size: crop side S.
        border_value: grey level of the padding where the crop leaves the photo.
        anti_alias: blur before shrinking.
    Returns:
        ``(S, S, 3) uint8`` crop.
    """
    m = np.asarray(photo_to_crop, dtype=np.float64)
    img = np.asarray(image)
    k = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    crop_to_photo = invert_affine(m)
    if anti_alias and k < 1.0:
        sigma = (1.0 / k - 1.0) / 2.0
        # Only the part of the photo under the crop (plus the blur's reach) is filtered.
        e = size - 0.5
        corners = map_points(np.array([[-0.5, -0.5], [e, -0.5], [-0.5, e], [e, e]]), crop_to_photo)
        pad = int(np.ceil(4 * sigma)) + 2
        h, w = img.shape[:2]
        x0 = max(int(np.floor(corners[:, 0].min())) - pad, 0)
        y0 = max(int(np.floor(corners[:, 1].min())) - pad, 0)
        x1 = min(int(np.ceil(corners[:, 0].max())) + pad + 1, w)
        y1 = min(int(np.ceil(corners[:, 1].max())) + pad + 1, h)
        if x1 <= x0 or y1 <= y0:
            return np.full((size, size, 3), border_value, dtype=np.uint8)
        roi = cv2.GaussianBlur(img[y0:y1, x0:x1], (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
        # the ROI's pixel (0, 0) is the photo's (x0, y0): shift the map accordingly
        crop_to_photo = crop_to_photo.copy()
        crop_to_photo[:, 2] -= (x0, y0)
        img = roi
    return cv2.warpAffine(
        img,
        crop_to_photo,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(border_value,) * 3,
    )


def crop_square(
    image: np.ndarray, square: np.ndarray, size: int, border_value: int = 0, anti_alias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the square ``square`` of a photo to a ``size x size`` crop.

    Args:
        image: ``(H, W, 3) uint8`` photo.
        square: ``(4,)`` x0, y0, x1, y1 (edges, photo pixels), e.g. from :func:`square_box`.
        size: crop side S.
    Returns:
        ``(crop (S, S, 3) uint8, crop_to_photo (2, 3) float64)``; map crop predictions back with
        ``map_points(pts, crop_to_photo)``.
    """
    photo_to_crop = square_to_affine(square, size)
    crop = warp_crop(image, photo_to_crop, size, border_value=border_value, anti_alias=anti_alias)
    return crop, invert_affine(photo_to_crop)
