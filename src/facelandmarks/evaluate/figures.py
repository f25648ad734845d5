"""The CED figure: one panel per data set, one curve per model and protocol (curves only, no photos)."""

from __future__ import annotations

import os

import pandas as pd

from facelandmarks.fsutil import atomic_path

__all__ = ["plot_ced"]

_STYLE = {"crops": "-", "end_to_end": "--"}


def plot_ced(curves: dict[tuple[str, str, str, str], pd.DataFrame], split: str, out: str | os.PathLike,
             normaliser: str = "inter_ocular", thresholds: tuple[float, ...] = (0.08, 0.10)) -> None:
    """Draw CED curves of one split.

    Args:
        curves: ``{(model, protocol, dataset, split): DataFrame(nme, fraction)}`` from
            :func:`facelandmarks.evaluate.summary.ced_tables`.
        split: which split to draw (``test``).
        out: PNG path, written atomically.
        normaliser: name shown on the x axis.
        thresholds: drawn as dotted vertical lines.
    Raises:
        ValueError: no curve of that split.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in curves if k[3] == split]
    if not keys:
        raise ValueError(f"plot_ced: no curve for split {split!r}")
    datasets = sorted({k[2] for k in keys})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for model, protocol, d, s in sorted(k for k in keys if k[2] == dataset):
            c = curves[(model, protocol, d, s)]
            ax.plot(c["nme"] * 100, c["fraction"], _STYLE.get(protocol, "-"), label=f"{model}, {protocol.replace('_', ' ')}")
        for t in thresholds:
            ax.axvline(t * 100, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{dataset}, {split}")
        ax.set_xlabel(f"NME, % of {normaliser.replace('_', '-')} distance")
        ax.set_ylabel("fraction of faces")
        ax.set_ylim(0, 1)
        ax.set_xlim(0, float(max(c["nme"].max() for c in curves.values()) * 100))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Cumulative error distribution (end to end: missed faces never reach the curve)", fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
