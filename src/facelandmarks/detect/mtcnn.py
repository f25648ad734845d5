"""Batched MTCNN face detection (facenet-pytorch), on the GPU when there is one.

MTCNN: Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", IEEE SPL 2016. facenet-pytorch ships the P-, R- and O-net weights inside its wheel, so
detection works offline. Its networks run through :func:`facelandmarks.detect.cascade.detect_face`, which gives
``MTCNN.detect``'s boxes, scores and points bit for bit at 1.3-1.5x its speed on the CPU (its ``extract_face``
clips and squashes non-square boxes and is not used); crops are cut by :mod:`facelandmarks.crop.geometry`.

The same detector serves the ``crop`` stage, evaluation and inference, so every consumer sees faces
the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from pydantic import Field

from facelandmarks.detect.cascade import detect_face
from facelandmarks.device import resolve_device
from facelandmarks.params import StrictModel

__all__ = ["DetectorConfig", "Detections", "FaceDetector", "detection_overrides"]


class DetectorConfig(StrictModel):
    """MTCNN settings (params.yaml ``crop.detector``); stored with a model so serving detects alike.

    Attributes:
        min_face_size: smallest face searched for, in pixels of the detection image (after
            ``max_side`` downscaling); MTCNN's pyramid starts at ``12 / min_face_size``.
        thresholds: score thresholds of the P-, R- and O-net stages.
        factor: scale step of the image pyramid.
        max_side: photos whose longer side exceeds this are downscaled for detection (boxes are
            mapped back to photo pixels); 0 = never downscale.
        batch_size: photos per MTCNN forward pass (photos of equal detection size are batched).
        pad_multiple: pad each detection image at the bottom and right (black) up to a multiple of
            this many pixels, so photos of different sizes share a batch (worth it on a GPU); the
            padding sits beyond the photo, so boxes need no correction. 0 = no padding.
        min_score: detections scoring below this are dropped.
        rotate_angles: degrees (counter-clockwise) at which a photo is searched again when MTCNN finds no
            face scoring at least ``rotate_below`` upright: MTCNN was trained on upright faces and misses
            tilted heads (75 % of its misses on InfAnFace train+val are flagged tilted). The rotated photo's
            detections are mapped back (box centre and MTCNN points by the inverse rotation, box side kept);
            the angle whose best face scores highest wins. Costs one MTCNN pass per angle, only on such
            photos. Empty: off.
        rotate_below: best upright score under which the rotated passes run.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    """

    min_face_size: int = Field(20, ge=8)
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = Field(0.709, gt=0.1, lt=1.0)
    max_side: int = Field(1024, ge=0)
    batch_size: int = Field(8, ge=1)
    pad_multiple: int = Field(0, ge=0)
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    rotate_angles: tuple[float, ...] = ()
    rotate_below: float = Field(0.9, ge=0.0, le=1.0)
    device: str = "auto"


def detection_overrides(min_score: float | None = None, max_side: int | None = None,
                        rotate_angles: "Sequence[float] | None" = None) -> dict[str, Any]:
    """The product's detection settings to lay over a model's stored :class:`DetectorConfig` (``model_copy(update=)``).

    The service, ``facelandmarks predict``/``live`` and the end-to-end evaluation answer with the same
    settings (params.yaml ``serve.detect_*`` = ``evaluate.detector_*``), whatever the model stored.

    Args:
        min_score: score floor; None: keep the stored one.
        max_side: detection size in pixels; None or 0: keep the stored one.
        rotate_angles: degrees of the rotated retry (``()``: off); None: keep the stored ones.
    Returns:
        the ``DetectorConfig`` fields to replace (only those given).
    """
    out: dict[str, Any] = {}
    if min_score is not None:
        out["min_score"] = float(min_score)
    if max_side:
        out["max_side"] = int(max_side)
    if rotate_angles is not None:
        out["rotate_angles"] = tuple(float(a) for a in rotate_angles)
    return out


@dataclass(frozen=True)
class Detections:
    """Faces found in one photo, in photo pixels.

    Attributes:
        boxes: ``(n, 4) float32`` x0, y0, x1, y1 (MTCNN's box; its edges).
        scores: ``(n,) float32`` face probability.
        points: ``(n, 5, 2) float32`` MTCNN's five points (scheme ``mtcnn5``).
    """

    boxes: np.ndarray
    scores: np.ndarray
    points: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    @staticmethod
    def empty() -> "Detections":
        """No face."""
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


class FaceDetector:
    """MTCNN over lists of photos, batched.

    Args:
        config: :class:`DetectorConfig` (defaults when None).
    Example:
        >>> det = FaceDetector(DetectorConfig())
        >>> [d] = det.detect([image])          # image (H, W, 3) uint8 RGB
        >>> d.boxes.shape                        # (n, 4)
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        from facenet_pytorch import MTCNN

        self.config = config or DetectorConfig()
        self.device = resolve_device(self.config.device)
        self._mtcnn = MTCNN(
            keep_all=True,
            min_face_size=self.config.min_face_size,
            thresholds=list(self.config.thresholds),
            factor=self.config.factor,
            select_largest=False,  # order by score
            device=self.device,
        )
        self._mtcnn.eval()
        if self.device == "cpu":
            # channels-last convolutions and max-pooling: MTCNN 1.7x faster on the CPU (torch's NCHW
            # max_pool2d is slow; 130 -> 78 ms per demo photo at 640 px, one thread), boxes equal within
            # 4e-4 px. ONNX Runtime for the three nets measured no faster than this.
            self._mtcnn.to(memory_format=torch.channels_last)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        """Validate a photo and downscale it to ``max_side`` for detection."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"FaceDetector: expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
        h, w = img.shape[:2]
        ms = self.config.max_side
        if ms and max(h, w) > ms:
            s = ms / max(h, w)
            nw, nh = max(1, round(w * s)), max(1, round(h * s))
            return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        return img

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Find faces in photos.

        Photos are downscaled to ``max_side`` (if larger), padded to ``pad_multiple`` (if set), grouped
        by size and run through MTCNN ``batch_size`` at a time; boxes and points are mapped back to
        each photo's pixels.

        Args:
            images: list of ``(H, W, 3) uint8`` RGB photos (any sizes).
        Returns:
            one :class:`Detections` per photo, in order, faces sorted by descending score.
        Raises:
            ValueError: an image that is not ``(H, W, 3) uint8``.
        """
        prepared = [self._prepare(im) for im in images]
        out: list[Detections | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        m = self.config.pad_multiple
        for i, small in enumerate(prepared):
            h, w = small.shape[:2]
            key = (-(-h // m) * m, -(-w // m) * m) if m else (h, w)
            groups.setdefault(key, []).append(i)
        bs = self.config.batch_size
        for (gh, gw), idx in groups.items():
            for start in range(0, len(idx), bs):
                chunk = idx[start : start + bs]
                batch = np.zeros((len(chunk), gh, gw, 3), np.uint8)
                for j, i in enumerate(chunk):
                    h, w = prepared[i].shape[:2]
                    batch[j, :h, :w] = prepared[i]
                for j, (boxes, probs, points) in enumerate(self._cascade(batch)):
                    i = chunk[j]
                    out[i] = self._to_detections(boxes, probs, points, images[i].shape, prepared[i].shape)
        if self.config.rotate_angles:
            for i, det in enumerate(out):
                if not len(det) or float(det.scores.max()) < self.config.rotate_below:
                    out[i] = self._rotated(prepared[i], images[i].shape, det)
        return out  # type: ignore[return-value]

    def _rotated(self, small: np.ndarray, photo_shape: tuple[int, ...], upright: "Detections") -> "Detections":
        """Search ``small`` (the detection image) again at each of ``rotate_angles``; the best angle's faces
        (by their top score) replace ``upright`` when they score higher."""
        best, best_score = upright, (float(upright.scores.max()) if len(upright) else -1.0)
        h, w = small.shape[:2]
        for angle in self.config.rotate_angles:
            m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), float(angle), 1.0)
            cos, sin = abs(m[0, 0]), abs(m[0, 1])
            nw, nh = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
            m[0, 2] += nw / 2.0 - w / 2.0
            m[1, 2] += nh / 2.0 - h / 2.0
            rotated = cv2.warpAffine(small, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            [(boxes, probs, points)] = self._cascade(rotated[None])
            if len(boxes) == 0:
                continue
            b = np.asarray(boxes, np.float32).reshape(-1, 4)
            p = np.asarray(points, np.float32).reshape(-1, 5, 2)
            inv = cv2.invertAffineTransform(m).astype(np.float32)  # rotated -> detection image pixels
            centre = 0.5 * (b[:, :2] + b[:, 2:])
            centre = centre @ inv[:, :2].T + inv[:, 2]
            half = 0.5 * (b[:, 2:] - b[:, :2])
            b = np.concatenate([centre - half, centre + half], axis=1)
            p = p @ inv[:, :2].T + inv[:, 2]
            det = self._to_detections(b, probs, p, photo_shape, small.shape)
            if len(det) and float(det.scores.max()) > best_score:
                best, best_score = det, float(det.scores.max())
        return best

    def _cascade(self, batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """MTCNN on ``(N, H, W, 3) uint8`` photos of one size: per photo ``(boxes (n, 4), scores (n,), points
        (n, 5, 2))`` in detection-image pixels, as ``MTCNN.detect(batch, landmarks=True)`` gives them (bit for bit:
        :mod:`facelandmarks.detect.cascade`), in facenet-pytorch's order."""
        m = self._mtcnn
        with torch.no_grad():
            boxes, points = detect_face(batch, m.min_face_size, m.pnet, m.rnet, m.onet, m.thresholds, m.factor,
                                        m.device)
        return [(b[:, :4], b[:, 4], p) for b, p in zip(boxes, points)]

    def _to_detections(self, boxes, probs, points, photo_shape, det_shape) -> Detections:
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        b = np.asarray(boxes).astype(np.float32).reshape(-1, 4)
        s = np.asarray(probs).astype(np.float32).reshape(-1)
        p = np.asarray(points).astype(np.float32).reshape(-1, 5, 2)
        sx = photo_shape[1] / det_shape[1]
        sy = photo_shape[0] / det_shape[0]
        if sx != 1.0 or sy != 1.0:
            # edge coordinates scale with the image (pixel edges 0..w map to 0..W)
            b = b * np.array([sx, sy, sx, sy], np.float32)
            # points are pixel-centre coordinates: x = (x' + 0.5) * sx - 0.5
            p = (p + 0.5) * np.array([sx, sy], np.float32) - 0.5
        keep = s >= self.config.min_score
        order = np.argsort(-s[keep], kind="stable")
        return Detections(b[keep][order], s[keep][order], p[keep][order])
