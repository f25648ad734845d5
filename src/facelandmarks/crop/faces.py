"""Finding and cutting faces: the one path that training crops, evaluation and serving share.

``find_faces(detector, image, cfg)`` is what inference calls: photo in, faces out, each with its
detection box, score and a ``crop_to_photo`` affine so that landmarks predicted in crop pixels map
back to the photo exactly (``map_points(pred, face.crop_to_photo)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelandmarks.crop.config import CropConfig, FallbackConfig
from facelandmarks.crop.geometry import crop_square, square_box
from facelandmarks.data.table import landmarks_bbox
from facelandmarks.detect.mtcnn import Detections, FaceDetector

__all__ = ["FaceCrop", "crop_face", "faces_from_detections", "find_faces", "find_faces_batch", "fallback_box"]


@dataclass(frozen=True)
class FaceCrop:
    """A detected face and its square crop: what the landmark network is fed (not the served result,
    which is :class:`facelandmarks.inference.landmarker.Face`).

    Attributes:
        box: ``(4,) float32`` MTCNN box x0, y0, x1, y1, photo pixels.
        score: MTCNN face probability.
        points5: ``(5, 2) float32`` MTCNN's five points, photo pixels (scheme ``mtcnn5``).
        crop: ``(S, S, 3) uint8`` RGB square crop, the model's input.
        crop_to_photo: ``(2, 3) float64`` affine from crop pixels to photo pixels.
    """

    box: np.ndarray
    score: float
    points5: np.ndarray
    crop: np.ndarray
    crop_to_photo: np.ndarray


def crop_face(image: np.ndarray, box: np.ndarray, cfg: CropConfig) -> tuple[np.ndarray, np.ndarray]:
    """Cut the square crop for one detection box.

    Args:
        image: ``(H, W, 3) uint8`` photo.
        box: ``(4,)`` detection box x0, y0, x1, y1 (photo pixels).
        cfg: crop settings.
    Returns:
        ``(crop (S, S, 3) uint8, crop_to_photo (2, 3) float64)``.
    Raises:
        ValueError: a degenerate box.
    """
    square = square_box(box, cfg.scale, cfg.offset)
    return crop_square(image, square, cfg.size, border_value=cfg.border_value, anti_alias=cfg.anti_alias)


def fallback_box(landmarks: np.ndarray, fb: FallbackConfig) -> np.ndarray:
    """An MTCNN-like box from annotated landmarks, for faces the detector missed.

    Args:
        landmarks: ``(K, 2)`` photo pixels (NaN rows ignored).
        fb: calibration of landmark box -> detection box.
    Returns:
        ``(4,) float32`` square box x0, y0, x1, y1.
    Raises:
        ValueError: fewer than two finite points or a degenerate landmark box.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) < 2:
        raise ValueError("fallback_box: fewer than two finite landmarks")
    return square_box(landmarks_bbox(pts), fb.scale, (fb.dx, fb.dy)).astype(np.float32)


def faces_from_detections(image: np.ndarray, detections: Detections, cfg: CropConfig) -> list[FaceCrop]:
    """Crop every detection of one photo.

    Returns:
        faces in the detections' order (descending score); degenerate boxes are dropped.
    """
    faces = []
    for box, score, pts in zip(detections.boxes, detections.scores, detections.points):
        try:
            crop, c2p = crop_face(image, box, cfg)
        except ValueError:
            continue
        faces.append(FaceCrop(box=box, score=float(score), points5=pts, crop=crop, crop_to_photo=c2p))
    return faces


def find_faces(detector: FaceDetector, image: np.ndarray, cfg: CropConfig) -> list[FaceCrop]:
    """Detect and crop every face of a photo (the inference entry point).

    Args:
        detector: a :class:`FaceDetector`.
        image: ``(H, W, 3) uint8`` RGB photo.
        cfg: crop settings (those the model was trained with).
    Returns:
        list of :class:`FaceCrop`, by descending score; empty when no face is found.
    """
    return find_faces_batch(detector, [image], cfg)[0]


def find_faces_batch(detector: FaceDetector, images: list[np.ndarray], cfg: CropConfig) -> list[list[FaceCrop]]:
    """:func:`find_faces` over many photos (e.g. video frames), detection batched.

    Returns:
        one list of :class:`FaceCrop` per photo.
    """
    dets = detector.detect(images)
    return [faces_from_detections(im, d, cfg) for im, d in zip(images, dets)]
