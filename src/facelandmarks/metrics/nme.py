"""Normalised mean error (NME), the standard face-alignment accuracy measure.

``NME_i = mean_k ||pred_ik - gt_ik||_2 / d_i`` over the visible points ``k`` of face ``i``, where ``d_i``
is a normalising distance of that face (300-W protocol, Sagonas et al. IVC 2016):

* ``inter_ocular``: distance between the outer eye corners (iBUG 68 points 36 and 45);
* ``inter_pupil``: distance between the eye-contour centres (means of points 36-41 and 42-47);
* ``box``: ``sqrt(w * h)`` of the tight box around the ground-truth points (as in Bulat & Tzimiropoulos,
  ICCV 2017).

This module is the single implementation of NME in the package; training, evaluation and benchmarks call it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from facelandmarks.schemes import LandmarkScheme

__all__ = ["NormKind", "normaliser", "nme"]

NormKind = Literal["inter_ocular", "inter_pupil", "box"]


def normaliser(gt: np.ndarray, scheme: LandmarkScheme, kind: NormKind = "inter_ocular") -> np.ndarray:
    """Per-face normalising distance.

    Args:
        gt: ``(N, K, 2)`` ground-truth points, pixels.
        scheme: their landmark scheme (eye corner and pupil indices).
        kind: ``inter_ocular``, ``inter_pupil`` or ``box``.
    Returns:
        ``(N,) float64`` distances in the same pixels.
    Raises:
        ValueError: unknown ``kind`` or ``gt`` not ``(N, K, 2)`` with K of the scheme.
    """
    g = np.asarray(gt, dtype=np.float64)
    if g.ndim != 3 or g.shape[1:] != (scheme.num_points, 2):
        raise ValueError(f"gt must be (N, {scheme.num_points}, 2) for scheme {scheme.name!r}, got {g.shape}")
    if kind == "inter_ocular":
        r, l = scheme.outer_eye_corners
        return np.linalg.norm(g[:, r] - g[:, l], axis=-1)
    if kind == "inter_pupil":
        p = scheme.pupils(g)
        return np.linalg.norm(p[:, 0] - p[:, 1], axis=-1)
    if kind == "box":
        wh = g.max(axis=1) - g.min(axis=1)
        return np.sqrt(wh[:, 0] * wh[:, 1])
    raise ValueError(f"unknown normaliser {kind!r}; use inter_ocular, inter_pupil or box")


def nme(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """Per-face normalised mean error.

    Args:
        pred: ``(N, K, 2)`` predicted points, pixels.
        gt: ``(N, K, 2)`` ground truth, same pixels.
        norm: ``(N,)`` normalising distances (:func:`normaliser`), same pixels.
        visible: ``(N, K)`` bool; hidden points are left out of the mean. None: all points count.
    Returns:
        ``(N,) float64`` NME per face as a fraction (0.05 = 5%); NaN for a face with no visible point.
    Raises:
        ValueError: shapes disagree, or a normalising distance is not positive.
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    d = np.asarray(norm, dtype=np.float64)
    if p.shape != g.shape or p.ndim != 3 or p.shape[-1] != 2:
        raise ValueError(f"pred {p.shape} and gt {g.shape} must both be (N, K, 2)")
    if d.shape != (p.shape[0],):
        raise ValueError(f"norm must be ({p.shape[0]},), got {d.shape}")
    if not (d > 0).all():
        raise ValueError(f"normalising distances must be positive; faces {np.flatnonzero(~(d > 0)).tolist()} are not")
    err = np.linalg.norm(p - g, axis=-1)
    if visible is None:
        per_face = err.mean(axis=1)
    else:
        v = np.asarray(visible, dtype=bool)
        if v.shape != err.shape:
            raise ValueError(f"visible must be {err.shape}, got {v.shape}")
        with np.errstate(invalid="ignore", divide="ignore"):
            per_face = (err * v).sum(axis=1) / v.sum(axis=1)
    return per_face / d
