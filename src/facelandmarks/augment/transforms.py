"""Landmark-aware augmentation with albumentations 2.0.x (MIT).

Each transform of :class:`~facelandmarks.augment.config.AugmentParams` becomes one albumentations
transform; they run in the order geometry (affine, flip), photometry (colour, blur, noise, JPEG),
occlusion. Keypoints are kept as a fixed ``(K, 2)`` array (``remove_invisible=False``); a horizontal
flip mirrors x to ``(W - 1) - x`` in albumentations but does not swap left and right points, so
:func:`augment_face` re-indexes them with the scheme's flip permutation whenever a flip was applied
(read from ``Compose(save_applied_params=True)``).
"""

from __future__ import annotations

import hashlib

import albumentations as A
import cv2
import numpy as np

from facelandmarks.augment.config import AugmentParams
from facelandmarks.schemes import LandmarkScheme

__all__ = ["TRANSFORM_NAMES", "build_transforms", "compose", "augment_face", "variant_seed"]

#: Names of the transforms, in the order they are applied.
TRANSFORM_NAMES = ("affine", "flip", "color", "blur", "noise", "jpeg", "occlusion")


def build_transforms(params: AugmentParams, always: bool = False) -> dict[str, A.BasicTransform | A.BaseCompose]:
    """One albumentations transform per name of :data:`TRANSFORM_NAMES`.

    Args:
        params: augment settings.
        always: give every transform ``p=1`` (tests apply them one at a time).
    Returns:
        ``{name: transform}`` in application order.
    """

    def p(x: float) -> float:
        return 1.0 if always else x

    a, c, b, n, j, o = params.affine, params.color, params.blur, params.noise, params.jpeg, params.occlusion
    return {
        "affine": A.Affine(
            scale=tuple(a.scale),
            translate_percent=(-a.shift, a.shift),
            rotate=(-a.rotate, a.rotate),
            interpolation=cv2.INTER_LINEAR,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            p=p(a.p),
        ),
        "flip": A.HorizontalFlip(p=p(params.flip.p)),
        "color": A.RandomBrightnessContrast(brightness_limit=c.brightness, contrast_limit=c.contrast, p=p(c.p)),
        # Gaussian only: albumentations' MotionBlur draws even-length lines whose kernels are off
        # centre by half a pixel even with allow_shifted=False, which would move content off its landmarks.
        "blur": A.GaussianBlur(blur_limit=0, sigma_limit=tuple(b.sigma), p=p(b.p)),
        "noise": A.GaussNoise(std_range=tuple(n.std), p=p(n.p)),
        "jpeg": A.ImageCompression(compression_type="jpeg", quality_range=tuple(j.quality), p=p(j.p)),
        "occlusion": A.CoarseDropout(
            num_holes_range=tuple(o.holes),
            hole_height_range=tuple(o.size),
            hole_width_range=tuple(o.size),
            fill="random_uniform",
            p=p(o.p),
        ),
    }


def compose(transforms: list[A.BasicTransform | A.BaseCompose] | dict) -> A.Compose:
    """Wrap transforms in a ``Compose`` that carries ``(K, 2)`` xy keypoints and records what it applied."""
    items = list(transforms.values()) if isinstance(transforms, dict) else list(transforms)
    return A.Compose(
        items,
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
        save_applied_params=True,
    )


def variant_seed(seed: int, face_id: str, variant: int) -> int:
    """Deterministic 63-bit seed for one variant of one face (independent of processing order)."""
    digest = hashlib.blake2b(f"{seed}/{face_id}/{variant}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def augment_face(
    pipeline: A.Compose,
    image: np.ndarray,
    landmarks: np.ndarray,
    visible: np.ndarray,
    scheme: LandmarkScheme,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Augment one crop and its landmarks.

    Args:
        pipeline: from :func:`compose`.
        image: ``(S, S, 3) uint8`` RGB crop.
        landmarks: ``(K, 2)`` crop pixels (pixel centres at integers).
        visible: ``(K,) bool``.
        scheme: the landmarks' scheme (its flip permutation re-indexes mirrored faces).
        seed: the variant's seed (:func:`variant_seed`); equal seeds give equal outputs.
    Returns:
        ``(image (S, S, 3) uint8, landmarks (K, 2) float32, visible (K,) bool, flipped)``: a point
        moved outside the image ``[-0.5, S - 0.5]`` is marked not visible (its coordinates are kept).
    Raises:
        ValueError: landmarks that are not ``(K, 2)`` for the scheme's K.
    """
    pts = np.asarray(landmarks, dtype=np.float32)
    if pts.shape != (scheme.num_points, 2):
        raise ValueError(f"augment_face: landmarks of shape {pts.shape}, scheme {scheme.name} needs ({scheme.num_points}, 2)")
    pipeline.set_random_seed(seed)
    out = pipeline(image=image, keypoints=pts)
    kp = np.asarray(out["keypoints"], dtype=np.float32).reshape(-1, 2)
    vis = np.asarray(visible, dtype=bool).copy()
    flips = sum(1 for name, _ in out.get("applied_transforms", []) if name == "HorizontalFlip")
    flipped = flips % 2 == 1
    if flipped:
        kp = kp[scheme.flip_index]
        vis = vis[scheme.flip_index]
    h, w = out["image"].shape[:2]
    inside = (kp[:, 0] >= -0.5) & (kp[:, 0] <= w - 0.5) & (kp[:, 1] >= -0.5) & (kp[:, 1] <= h - 0.5)
    return out["image"], kp, vis & inside, flipped
