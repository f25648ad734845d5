"""Matching detections to annotated faces by box overlap (intersection over union)."""

from __future__ import annotations

import numpy as np

__all__ = ["box_iou", "match_boxes"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union.

    Args:
        a: ``(n, 4)`` boxes x0, y0, x1, y1.
        b: ``(m, 4)`` boxes.
    Returns:
        ``(n, m) float64`` IoU in [0, 1] (0 for boxes without area).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0)


def match_boxes(detections: np.ndarray, references: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one greedy matching of detections to reference (annotated) boxes by IoU.

    Pairs are taken in order of decreasing IoU; each detection and each reference is used at most
    once; pairs below ``min_iou`` are never matched.

    Args:
        detections: ``(n, 4)`` detected boxes.
        references: ``(m, 4)`` annotated boxes (e.g. the box around the 68 landmarks).
        min_iou: smallest IoU that counts as a match.
    Returns:
        ``(index (m,) int64, iou (m,) float64)``: for each reference, the matched detection's index
        or -1, and the IoU of the match (or the best IoU with any detection when unmatched, 0 when
        there is no detection).
    """
    iou = box_iou(detections, references)  # (n, m)
    n, m = iou.shape
    index = np.full(m, -1, dtype=np.int64)
    best = iou.max(axis=0) if n else np.zeros(m)
    out_iou = best.astype(np.float64).copy()
    if n == 0 or m == 0:
        return index, out_iou
    used_d = np.zeros(n, bool)
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        d, r = divmod(int(flat), m)
        if iou[d, r] < min_iou:
            break
        if used_d[d] or index[r] >= 0:
            continue
        index[r] = d
        out_iou[r] = iou[d, r]
        used_d[d] = True
    return index, out_iou
