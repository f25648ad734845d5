"""Landmark schemes as data: number of points, names, flip permutation, normalisation indices.

Nothing else in the package hard-codes 68: every stage asks its scheme.

Sources
-------
* ``ibug68``: the iBUG 300-W 68-point mark-up (Sagonas et al., "300 Faces in-the-Wild Challenge",
  ICCV-W 2013; IVC 2016). 0-based indices: jaw 0-16, right brow 17-21, left brow 22-26, nose bridge
  27-30, lower nose 31-35, right eye 36-41, left eye 42-47, outer lip 48-59, inner lip 60-67
  ("right" is the subject's right, i.e. image left). Inter-ocular NME uses the outer eye corners
  36 and 45; inter-pupil NME uses the centres of the two eye contours (36-41, 42-47).
* ``mtcnn5``: the five points MTCNN returns (Zhang et al., "Joint Face Detection and Alignment using
  Multi-task Cascaded Convolutional Networks", SPL 2016), in facenet-pytorch's order: image-left eye,
  image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LandmarkScheme", "IBUG68", "MTCNN5", "SCHEMES", "get_scheme"]


@dataclass(frozen=True)
class LandmarkScheme:
    """A landmark layout.

    Attributes:
        name: identifier stored in the annotation table's ``scheme`` column.
        names: one name per point; ``len(names)`` is the number of points K.
        flip_permutation: ``(K,)`` int; after mirroring an image horizontally, point ``i`` of the new
            face is point ``flip_permutation[i]`` of the mirrored old one (an involution).
        outer_eye_corners: indices ``(right, left)`` of the outer eye corners (inter-ocular NME).
        pupil_groups: two index tuples ``(right eye, left eye)`` whose means are the pupil centres
            (inter-pupil NME).
        groups: named index ranges for drawing contours (e.g. ``"jaw": (0..16)``), open polylines;
            ``closed_groups`` lists which of them are closed.
    """

    name: str
    names: tuple[str, ...]
    flip_permutation: tuple[int, ...]
    outer_eye_corners: tuple[int, int]
    pupil_groups: tuple[tuple[int, ...], tuple[int, ...]]
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    closed_groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        k = len(self.names)
        perm = np.asarray(self.flip_permutation)
        if perm.shape != (k,) or sorted(perm.tolist()) != list(range(k)):
            raise ValueError(f"scheme {self.name!r}: flip_permutation is not a permutation of {k} points")
        if not np.array_equal(perm[perm], np.arange(k)):
            raise ValueError(f"scheme {self.name!r}: flip_permutation is not an involution")

    @property
    def num_points(self) -> int:
        """K, the number of points."""
        return len(self.names)

    @property
    def flip_index(self) -> np.ndarray:
        """``(K,) int64`` flip permutation as an array, for fancy indexing ``pts[flip_index]``."""
        return np.asarray(self.flip_permutation, dtype=np.int64)

    def pupils(self, landmarks: np.ndarray) -> np.ndarray:
        """Pupil centres.

        Args:
            landmarks: ``(..., K, 2)`` points.
        Returns:
            ``(..., 2, 2)``: right then left pupil, the means of ``pupil_groups``.
        """
        pts = np.asarray(landmarks)
        right = pts[..., list(self.pupil_groups[0]), :].mean(axis=-2)
        left = pts[..., list(self.pupil_groups[1]), :].mean(axis=-2)
        return np.stack([right, left], axis=-2)

    def flip(self, landmarks: np.ndarray, width: int) -> np.ndarray:
        """Mirror points for an image of ``width`` pixels flipped horizontally.

        Pixel centres are at integers, so x maps to ``(width - 1) - x``; then left and right points
        are re-indexed with the flip permutation.

        Args:
            landmarks: ``(..., K, 2)`` 0-based pixels.
            width: image width in pixels.
        Returns:
            ``(..., K, 2)`` float32 points of the mirrored face.
        """
        pts = np.array(landmarks, dtype=np.float32, copy=True)
        pts[..., 0] = (width - 1) - pts[..., 0]
        return pts[..., self.flip_index, :]


def _ibug68() -> LandmarkScheme:
    names: list[str] = [f"jaw_{i}" for i in range(17)]
    names += [f"right_brow_{i}" for i in range(5)] + [f"left_brow_{i}" for i in range(5)]
    names += [f"nose_bridge_{i}" for i in range(4)] + [f"lower_nose_{i}" for i in range(5)]
    names += [f"right_eye_{i}" for i in range(6)] + [f"left_eye_{i}" for i in range(6)]
    names += [f"outer_lip_{i}" for i in range(12)] + [f"inner_lip_{i}" for i in range(8)]
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]  # brows
    pairs += [(31, 35), (32, 34)]  # lower nose
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lip
    perm = list(range(68))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    groups = {
        "jaw": tuple(range(0, 17)),
        "right_brow": tuple(range(17, 22)),
        "left_brow": tuple(range(22, 27)),
        "nose_bridge": tuple(range(27, 31)),
        "lower_nose": tuple(range(31, 36)),
        "right_eye": tuple(range(36, 42)),
        "left_eye": tuple(range(42, 48)),
        "outer_lip": tuple(range(48, 60)),
        "inner_lip": tuple(range(60, 68)),
    }
    return LandmarkScheme(
        name="ibug68",
        names=tuple(names),
        flip_permutation=tuple(perm),
        outer_eye_corners=(36, 45),
        pupil_groups=(tuple(range(36, 42)), tuple(range(42, 48))),
        groups=groups,
        closed_groups=("right_eye", "left_eye", "outer_lip", "inner_lip"),
    )


IBUG68 = _ibug68()

MTCNN5 = LandmarkScheme(
    name="mtcnn5",
    names=("image_left_eye", "image_right_eye", "nose_tip", "image_left_mouth", "image_right_mouth"),
    flip_permutation=(1, 0, 2, 4, 3),
    outer_eye_corners=(0, 1),
    pupil_groups=((0,), (1,)),
    groups={},
)

SCHEMES: dict[str, LandmarkScheme] = {s.name: s for s in (IBUG68, MTCNN5)}


def get_scheme(name: str) -> LandmarkScheme:
    """Look a scheme up by name.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    try:
        return SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown landmark scheme {name!r}; known: {sorted(SCHEMES)}") from None


def ibug68_to_mtcnn5(landmarks: np.ndarray) -> np.ndarray:
    """Derive MTCNN's five points from iBUG 68 points.

    Args:
        landmarks: ``(..., 68, 2)``.
    Returns:
        ``(..., 5, 2)``: eye-contour centres (36-41, 42-47), nose tip 30, mouth corners 48 and 54.
    """
    pts = np.asarray(landmarks, dtype=np.float32)
    eyes = IBUG68.pupils(pts)
    return np.concatenate([eyes, pts[..., [30, 48, 54], :]], axis=-2)
