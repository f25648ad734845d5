"""Landmark losses on coordinates, masked by point visibility.

All losses take ``pred`` and ``target`` ``(B, K, 2)`` in the same units (the training loop uses crop
pixels of the model input) and ``visible`` ``(B, K)`` bool; hidden points contribute nothing. The loss of a
point is the sum over x and y of an elementwise function of the error ``d = pred - target``; the result is
the mean over visible points (0 when no point is visible).

* L1: ``|d|``.  L2: ``d^2 / 2``.
* Wing (Feng et al., "Wing Loss for Robust Facial Landmark Localisation with Convolutional Neural
  Networks", CVPR 2018, eq. 5): ``w ln(1 + |d|/eps)`` if ``|d| < w`` else ``|d| - C``,
  ``C = w - w ln(1 + w/eps)``; defaults ``w = 10``, ``eps = 2`` (the paper's).
* Adaptive Wing (Wang et al., "Adaptive Wing Loss for Robust Face Alignment via Heatmap Regression",
  ICCV 2019, eq. 8): ``omega ln(1 + |d/eps|^(alpha - y))`` if ``|d| < theta`` else ``A|d| - C`` with
  ``A = omega (1/(1+(theta/eps)^(alpha-y))) (alpha-y) (theta/eps)^(alpha-y-1) / eps`` and
  ``C = theta A - omega ln(1 + (theta/eps)^(alpha-y))``; defaults ``omega = 14, theta = 0.5, eps = 1,
  alpha = 2.1`` (the paper's). The paper applies it to heatmap pixels with target intensity ``y``;
  :func:`adaptive_wing` is that elementwise function. On coordinates (:func:`landmark_loss` with
  ``"awing"``) the target intensity is ``y = 0`` (a point's error is compared with "no error"), which gives a
  loss that is smooth, ~``|d|^2.1`` near zero, and linear for errors above ``theta``.

Heatmap supervision (:func:`heatmap_js`) is the DSNT regulariser (Nibali et al., "Numerical Coordinate
Regression with Convolutional Neural Networks", arXiv:1801.07372, 2018, eq. 8): the Jensen-Shannon divergence
between a head's softmax heatmap and a Gaussian centred on the target point, added to the coordinate loss so the
heatmap is one compact blob where the point is, not any distribution with the right mean.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

__all__ = ["LossName", "l1", "l2", "wing", "adaptive_wing", "LOSSES", "masked_mean", "landmark_loss", "heatmap_js"]

LossName = Literal["l1", "l2", "wing", "awing"]


def l1(d: torch.Tensor) -> torch.Tensor:
    """Elementwise ``|d|``."""
    return d.abs()


def l2(d: torch.Tensor) -> torch.Tensor:
    """Elementwise ``d^2 / 2``."""
    return 0.5 * d * d


def wing(d: torch.Tensor, w: float = 10.0, eps: float = 2.0) -> torch.Tensor:
    """Elementwise Wing loss of an error ``d`` (Feng et al. CVPR 2018, eq. 5)."""
    a = d.abs()
    c = w - w * math.log(1.0 + w / eps)
    return torch.where(a < w, w * torch.log1p(a / eps), a - c)


def adaptive_wing(
    pred: torch.Tensor,
    target: torch.Tensor,
    omega: float = 14.0,
    theta: float = 0.5,
    eps: float = 1.0,
    alpha: float = 2.1,
) -> torch.Tensor:
    """Elementwise Adaptive Wing loss (Wang et al. ICCV 2019, eq. 8).

    Args:
        pred: predictions, any shape.
        target: same shape; for heatmaps the target intensity ``y`` in [0, 1]; 0 for coordinate errors.
    Returns:
        Loss, same shape as ``pred``.
    """
    d = (pred - target).abs()
    p = alpha - target.to(d.dtype)  # the exponent adapts to the target intensity
    r = torch.as_tensor(theta / eps, dtype=d.dtype, device=d.device)
    a = omega * (1.0 / (1.0 + torch.pow(r, p))) * p * torch.pow(r, p - 1.0) / eps
    c = theta * a - omega * torch.log1p(torch.pow(r, p))
    small = omega * torch.log1p(torch.pow(d / eps, p))
    return torch.where(d < theta, small, a * d - c)


LOSSES = {
    "l1": l1,
    "l2": l2,
    "wing": wing,
    "awing": lambda d: adaptive_wing(d, torch.zeros_like(d)),
}
"""``train.loss`` name -> elementwise loss of a coordinate error ``d`` (timm-style registry)."""


def masked_mean(per_point: torch.Tensor, visible: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``(B, K)`` per-point values over visible points (0 when none is visible)."""
    if visible is None:
        return per_point.mean()
    m = visible.to(per_point.dtype)
    return (per_point * m).sum() / m.sum().clamp_min(1.0)


def landmark_loss(
    pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor | None = None, kind: LossName = "l1"
) -> torch.Tensor:
    """Coordinate loss masked by visibility.

    Args:
        pred: ``(B, K, 2)``.
        target: ``(B, K, 2)`` same units.
        visible: ``(B, K)`` bool, or None (all points count).
        kind: ``l1``, ``l2``, ``wing`` or ``awing``.
    Returns:
        Scalar: mean over visible points of the loss summed over x and y.
    Raises:
        ValueError: unknown ``kind`` or shapes that differ.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; use one of {', '.join(LOSSES)}")
    e = LOSSES[kind](pred.float() - target.float())
    return masked_mean(e.sum(dim=-1), visible)


def _kl_to_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``KL(a || (a + b) / 2)`` over the last axis, as ``sum a ln(2a / (a + b))``: exactly 0 for ``a = b``, and
    finite with finite gradients where a map holds zeros. Values below the smallest normal float32 count as 0
    (a subnormal halves to 0, and its reciprocal overflows)."""
    tiny = torch.finfo(torch.float32).tiny
    used = a >= tiny
    ratio = torch.where(used, 2.0 * a / torch.where(used, a + b, torch.ones_like(a)), torch.ones_like(a))
    return torch.where(used, a * torch.log(ratio), torch.zeros_like(a)).sum(-1)


def heatmap_js(prob: torch.Tensor, target: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
    """Jensen-Shannon divergence between predicted and target heatmaps, masked mean over points (DSNT, eq. 8).

    ``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``, natural log: 0 for equal maps,
    at most ``ln 2`` for maps with disjoint support.

    Args:
        prob: ``(B, K, H, W)`` predicted probability maps (a softmax: each map sums to 1).
        target: ``(B, K, H, W)`` target maps (:meth:`facelandmarks.model.codecs.SoftArgmaxCodec.encode`). A map
            that sums to less than 0.5 (its point far outside the heatmap) is left out, like a hidden point.
        visible: ``(B, K)`` bool, or None (all points count).
    Returns:
        Scalar, nats: the mean JS divergence over the points that count (0 when none does).
    Raises:
        ValueError: ``prob`` and ``target`` differ in shape.
    """
    if prob.shape != target.shape:
        raise ValueError(f"heatmaps {tuple(prob.shape)} and targets {tuple(target.shape)} differ in shape")
    p, q = prob.float().flatten(2), target.float().flatten(2)
    kl_p, kl_q = _kl_to_mean(p, q), _kl_to_mean(q, p)
    js = 0.5 * (kl_p + kl_q)
    inside = q.sum(-1) >= 0.5
    mask = inside if visible is None else inside & visible.bool()
    return masked_mean(js, mask)
