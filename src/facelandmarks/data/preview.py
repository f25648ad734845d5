"""``reports/figures/data_preview.png``: a grid of annotated faces from each data set."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from facelandmarks.fsutil import atomic_path  # noqa: E402
from facelandmarks.io.images import ImageReadError, read_image  # noqa: E402
from facelandmarks.schemes import get_scheme  # noqa: E402

__all__ = ["plot_preview"]


def plot_preview(df: pd.DataFrame, out: str | os.PathLike, per_dataset: int = 8, seed: int = 0) -> None:
    """Draw ``per_dataset`` faces of each data set (one row each) with their landmarks.

    Each face is shown cropped to its landmark box plus a 25% margin; points are coloured by the
    scheme's groups (jaw, brows, nose, eyes, lips). Photos that cannot be read are left blank.

    Args:
        df: annotation table (see :mod:`facelandmarks.data.table`).
        out: PNG path, written atomically.
    """
    datasets = sorted(df["dataset"].unique())
    fig, axes = plt.subplots(len(datasets), per_dataset, figsize=(1.8 * per_dataset, 2.0 * len(datasets)), squeeze=False)
    rng = np.random.default_rng(seed)
    for r, name in enumerate(datasets):
        sub = df[df["dataset"] == name]
        idx = rng.choice(len(sub), size=min(per_dataset, len(sub)), replace=False)
        for c in range(per_dataset):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(idx):
                continue
            row = sub.iloc[int(idx[c])]
            try:
                img = read_image(row["image_path"])
            except ImageReadError:
                continue
            x0, y0, x1, y1 = row["bbox"]
            m = 0.25 * max(x1 - x0, y1 - y0)
            ax.imshow(img)
            scheme = get_scheme(row["scheme"])
            pts = row["landmarks"]
            for gi, (gname, ids) in enumerate(scheme.groups.items() or {"all": range(scheme.num_points)}.items()):
                ax.scatter(pts[list(ids), 0], pts[list(ids), 1], s=2, color=plt.cm.tab10(gi % 10))
            ax.set_xlim(x0 - m, x1 + m)
            ax.set_ylim(y1 + m, y0 - m)
            ax.set_title(f"{row['subset']} ({row['split']})", fontsize=7)
        axes[r, 0].text(-0.1, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right", fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
