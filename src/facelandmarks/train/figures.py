"""A figure of predictions beside the ground truth on validation faces (matplotlib, Agg backend)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from facelandmarks.fsutil import atomic_path  # noqa: E402
from facelandmarks.schemes import LandmarkScheme  # noqa: E402

__all__ = ["prediction_figure"]


def prediction_figure(
    path: str | os.PathLike,
    images: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    scheme: LandmarkScheme,
    nme: np.ndarray | None = None,
    title: str = "",
    cols: int = 4,
) -> None:
    """Draw crops with ground truth (green) and predictions (red), one panel per face, written atomically.

    Args:
        path: output PNG.
        images: ``(N, S, S, 3) uint8`` crops.
        pred: ``(N, K, 2)`` predicted crop pixels.
        gt: ``(N, K, 2)`` ground-truth crop pixels.
        scheme: for the contour groups.
        nme: ``(N,)`` per-face NME (fraction), shown in the panel titles.
        title: figure title.
    """
    n = len(images)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(images[i])
        for pts, colour in ((gt[i], "#2ca02c"), (pred[i], "#d62728")):
            for name, idx in scheme.groups.items():
                idx = list(idx) + ([idx[0]] if name in scheme.closed_groups else [])
                ax.plot(pts[idx, 0], pts[idx, 1], "-", color=colour, lw=0.8)
            ax.plot(pts[:, 0], pts[:, 1], ".", color=colour, ms=2.5)
        if nme is not None:
            ax.set_title(f"NME {100 * nme[i]:.1f}%", fontsize=9)
    if title:
        fig.suptitle(f"{title}  (green: ground truth, red: prediction)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
