"""Training and validation faces in memory, with cheap online augmentation.

Crops are small (128 px: 48 KiB each), so a stage loads all of them once into one ``(N, S, S, 3) uint8``
array; an epoch then costs no disk reads. Online augmentation (on top of the precomputed variants of the
``augment`` stage) draws a fresh random similarity transform and horizontal flip per sample: the flip
re-indexes left/right points with the scheme's flip permutation (:meth:`LandmarkScheme.flip`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from facelandmarks.io.images import ImageReadError, read_image
from facelandmarks.params import StrictModel
from facelandmarks.schemes import LandmarkScheme

__all__ = ["CropSet", "OnlineAugment", "load_faces", "concat_faces", "FaceDataset"]

log = logging.getLogger(__name__)


@dataclass
class CropSet:
    """Crops and their landmarks.

    Attributes:
        images: ``(N, S, S, 3) uint8`` RGB crops.
        landmarks: ``(N, K, 2) float32`` crop pixels, 0-based.
        visible: ``(N, K) bool``.
        face_ids: ``(N,)`` face ids (for figures and reports).
        skipped: rows that could not be read (reported, not fatal).
    """

    images: np.ndarray
    landmarks: np.ndarray
    visible: np.ndarray
    face_ids: np.ndarray
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray | slice) -> CropSet:
        """The faces at ``index``."""
        return CropSet(self.images[index], self.landmarks[index], self.visible[index], self.face_ids[index])


def concat_faces(parts: list[CropSet]) -> CropSet:
    """One :class:`CropSet` of several (same crop size), in order; ``skipped`` is summed.

    Raises:
        ValueError: no part, or crops of different sizes.
    """
    if not parts:
        raise ValueError("no faces to concatenate")
    sizes = {p.images.shape[1:] for p in parts}
    if len(sizes) > 1:
        raise ValueError(f"crops of different sizes cannot be concatenated: {sorted(sizes)}")
    return CropSet(np.concatenate([p.images for p in parts]), np.concatenate([p.landmarks for p in parts]),
                 np.concatenate([p.visible for p in parts]), np.concatenate([p.face_ids for p in parts]),
                 sum(p.skipped for p in parts))


def load_faces(
    table: pd.DataFrame, root: str | Path, image_column: str, landmark_column: str, size: int | None = None
) -> CropSet:
    """Read the crops a table points to.

    Args:
        table: rows of ``crops.parquet`` (``image_column="crop_path"``, ``landmark_column="crop_landmarks"``)
            or ``augmented.parquet`` (``image_path`` / ``landmarks``); needs ``face_id`` and ``visible``.
        root: project root the paths are relative to.
        size: expected crop side; crops of another size are resized (landmarks scaled with them).
    Returns:
        :class:`CropSet`; unreadable images or landmarks of the wrong shape are logged and skipped
        (``CropSet.skipped`` counts them).
    Raises:
        ValueError: no row could be read, or a needed column is missing (names the column).
    """
    for col in (image_column, landmark_column, "visible", "face_id"):
        if col not in table.columns:
            raise ValueError(f"table lacks column {col!r} (has {list(table.columns)})")
    root = Path(root)
    images, lms, vis, ids = [], [], [], []
    skipped = 0
    for row in table.itertuples(index=False):
        path = Path(getattr(row, image_column))
        path = path if path.is_absolute() else root / path
        pts = np.asarray(getattr(row, landmark_column), dtype=np.float32)
        try:
            img = read_image(path)
        except ImageReadError as e:
            log.warning("skipped face %s: %s", row.face_id, e)
            skipped += 1
            continue
        if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
            log.warning("skipped face %s: landmarks of shape %s or not finite", row.face_id, pts.shape)
            skipped += 1
            continue
        if size is not None and img.shape[:2] != (size, size):
            h, w = img.shape[:2]
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            pts = (pts + 0.5) * np.array([size / w, size / h], dtype=np.float32) - 0.5
        images.append(img)
        lms.append(pts)
        vis.append(np.asarray(row.visible, dtype=bool))
        ids.append(row.face_id)
    if not images:
        raise ValueError(f"none of the {len(table)} rows could be read (see the warnings above)")
    if skipped:
        log.warning("%d of %d faces skipped", skipped, len(table))
    return CropSet(np.stack(images), np.stack(lms).astype(np.float32), np.stack(vis), np.asarray(ids), skipped)


class OnlineAugment(StrictModel):
    """Per-sample random augmentation drawn anew every epoch (``train.online_augment`` in params).

    Attributes:
        flip: probability of a horizontal flip (points re-indexed by the scheme).
        rotate_deg: maximum absolute rotation, degrees, about the crop centre.
        scale: maximum relative scale change (``0.1`` draws from [0.9, 1.1]).
        shift: maximum translation as a fraction of the crop side.
    """

    flip: float = 0.5
    rotate_deg: float = 15.0
    scale: float = 0.1
    shift: float = 0.05

    def apply(
        self, image: np.ndarray, landmarks: np.ndarray, scheme: LandmarkScheme, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one crop.

        Args:
            image: ``(S, S, 3) uint8``.
            landmarks: ``(K, 2) float32`` crop pixels.
        Returns:
            ``(image, landmarks)`` of the same shapes (points may leave the crop; visibility is kept).
        """
        size = image.shape[0]
        pts = landmarks
        if self.flip > 0 and rng.random() < self.flip:
            image = image[:, ::-1]
            pts = scheme.flip(pts, size)
        angle = rng.uniform(-self.rotate_deg, self.rotate_deg)
        scale = 1.0 + rng.uniform(-self.scale, self.scale)
        tx, ty = rng.uniform(-self.shift, self.shift, size=2) * size
        if angle == 0.0 and scale == 1.0 and tx == 0.0 and ty == 0.0:
            return np.ascontiguousarray(image), np.asarray(pts, dtype=np.float32)
        c = (size - 1) / 2.0
        m = cv2.getRotationMatrix2D((c, c), angle, scale)
        m[:, 2] += (tx, ty)
        out = cv2.warpAffine(np.ascontiguousarray(image), m, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
        pts = pts @ m[:, :2].T.astype(np.float32) + m[:, 2].astype(np.float32)
        return out, pts.astype(np.float32)


class FaceDataset(Dataset):
    """A torch data set over :class:`CropSet`.

    Items are ``(image (S, S, 3) uint8 tensor, landmarks (K, 2) float32, visible (K,) bool)``; batches are
    turned into model input by :func:`facelandmarks.model.preprocess.to_tensor`.

    Mixing (finetuning without forgetting): each ``(pool, ratio)`` of ``mix`` adds ``round(ratio * len(faces))``
    rows of ``pool`` to every epoch, drawn without replacement (with replacement when the pool is smaller) from
    the seed and the epoch, so every epoch sees other pool rows and two runs see the same ones. Items
    ``0 .. len(faces)-1`` are ``faces``; the mixed rows follow.

    Args:
        faces: the crops.
        scheme: landmark scheme (flip permutation).
        augment: online augmentation, or None (validation).
        seed: base seed; sample ``i`` of epoch ``e`` uses ``(seed, e, i)``, so runs are reproducible and a
            resumed run draws what an uninterrupted one would.
        mix: ``(pool, ratio)`` pairs of other faces (same crop size) mixed into every epoch.
    """

    def __init__(self, faces: CropSet, scheme: LandmarkScheme, augment: OnlineAugment | None = None, seed: int = 0,
                 mix: list[tuple[CropSet, float]] = ()):
        self.faces = faces
        self.scheme = scheme
        self.augment = augment
        self.seed = seed
        self.mix = [(pool, int(round(ratio * len(faces)))) for pool, ratio in mix]
        self._drawn: list[np.ndarray] = []
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws (augmentation and mixed rows) ``__getitem__`` makes."""
        self.epoch = epoch
        self._drawn = []
        for j, (pool, n) in enumerate(self.mix):
            rng = np.random.default_rng((self.seed, epoch, 1_000_003 + j))
            self._drawn.append(rng.choice(len(pool), size=n, replace=n > len(pool)))

    def __len__(self) -> int:
        return len(self.faces) + sum(n for _, n in self.mix)

    def _row(self, i: int) -> tuple[CropSet, int]:
        if i < len(self.faces):
            return self.faces, i
        k = i - len(self.faces)
        for (pool, n), drawn in zip(self.mix, self._drawn):
            if k < n:
                return pool, int(drawn[k])
            k -= n
        raise IndexError(i)

    def __getitem__(self, i: int):
        faces, r = self._row(i)
        img = faces.images[r]
        pts = faces.landmarks[r]
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            img, pts = self.augment.apply(img, pts, self.scheme, rng)
        return torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(pts), torch.from_numpy(
            faces.visible[r]
        )
