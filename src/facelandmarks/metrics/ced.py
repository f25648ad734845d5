"""What is built on per-face NME: the CED curve, the failure rate and the AUC at a threshold.

Protocol (300-W, Sagonas et al., "300 Faces In-The-Wild Challenge: database and results", IVC 2016;
as reported in e.g. Feng et al., "Wing Loss for Robust Facial Landmark Localisation with
Convolutional Neural Networks", CVPR 2018):

* the **cumulative error distribution** (CED) is ``F(x) = fraction of faces with NME <= x``;
* the **failure rate** at a threshold ``t`` is the fraction of faces with ``NME > t`` (``1 - F(t)``);
* the **AUC** at ``t`` is the area under the CED from 0 to ``t`` divided by ``t``, so it lies in
  [0, 1] (1: every face is perfect).

The AUC is computed exactly, not on a grid: ``(1/t) * integral_0^t F(x) dx`` equals
``mean_i max(0, 1 - e_i / t)`` over the faces' errors ``e_i`` (each face contributes the part of
``[0, t]`` where it already counts as within the error). A grid of step ``h`` (the usual
implementations) converges to this value as ``h -> 0``.

A face that was not found at all (end-to-end evaluation, detector miss) is passed as ``inf``: it is
a failure at every threshold and adds nothing to the AUC. ``NaN`` errors are refused.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ced_curve", "failure_rate", "auc", "summarize", "threshold_key"]


def _errors(errors: np.ndarray, caller: str) -> np.ndarray:
    """Validated ``(N,) float64`` errors; ValueError naming ``caller`` when empty, NaN or negative."""
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if len(e) == 0:
        raise ValueError(f"{caller}: no errors")
    if np.isnan(e).any():
        raise ValueError(f"errors contain NaN at positions {np.flatnonzero(np.isnan(e)).tolist()[:10]}")
    if (e < 0).any():
        raise ValueError("errors must be non-negative")
    return e


def _threshold(t: float) -> float:
    if not t > 0:
        raise ValueError(f"threshold must be positive, got {t}")
    return float(t)


def ced_curve(errors: np.ndarray, max_error: float = 0.15, step: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """The cumulative error distribution on a grid.

    Args:
        errors: ``(N,)`` per-face NME (fractions, ``inf`` for missed faces).
        max_error: last grid point (e.g. 0.15).
        step: grid step (e.g. 0.001).
    Returns:
        ``(x (M,) float64, fraction (M,) float64)``: ``x = 0, step, ..., max_error`` and the fraction of
        faces with ``NME <= x``.
    Raises:
        ValueError: NaN or negative errors, no errors, or a non-positive ``max_error``/``step``.
    """
    e = _errors(errors, "ced_curve")
    _threshold(max_error)
    _threshold(step)
    x = np.round(np.arange(0.0, max_error + step / 2, step), 10)
    fraction = np.searchsorted(np.sort(e), x, side="right") / len(e)
    return x, fraction


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    """Fraction of faces with ``NME > threshold`` (``inf`` counts as a failure).

    Raises:
        ValueError: NaN or negative errors, no errors, or a non-positive threshold.
    """
    e = _errors(errors, "failure_rate")
    return float((e > _threshold(threshold)).mean())


def auc(errors: np.ndarray, threshold: float) -> float:
    """Area under the CED from 0 to ``threshold``, divided by ``threshold`` (exact; in [0, 1]).

    Raises:
        ValueError: NaN or negative errors, no errors, or a non-positive threshold.
    """
    e = _errors(errors, "auc")
    t = _threshold(threshold)
    return float(np.clip(1.0 - e / t, 0.0, None).mean())


def threshold_key(threshold: float) -> str:
    """Metric-name suffix of a threshold: 0.08 -> ``"08"``, 0.1 -> ``"10"``, 0.075 -> ``"075"``.

    Dots are left out because DVC and MLflow use them to nest metric names.
    """
    digits = f"{threshold:.4f}".split(".")[1].rstrip("0")
    return digits.ljust(2, "0")


def summarize(errors: np.ndarray, thresholds: tuple[float, ...] = (0.08, 0.10)) -> dict[str, float]:
    """Failure rate and AUC of one error set at each threshold.

    Args:
        errors: ``(N,)`` per-face NME (``inf`` for missed faces).
        thresholds: e.g. ``(0.08, 0.10)``.
    Returns:
        ``{"failure_rate_08": ..., "auc_08": ..., "failure_rate_10": ..., "auc_10": ...}``.
    """
    out: dict[str, float] = {}
    for t in thresholds:
        k = threshold_key(t)
        out[f"failure_rate_{k}"] = failure_rate(errors, t)
        out[f"auc_{k}"] = auc(errors, t)
    return out
