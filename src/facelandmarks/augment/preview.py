"""``reports/figures/augment_preview.png``: training faces (rows) and their variants (columns)."""

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

__all__ = ["plot_augment_preview"]


def plot_augment_preview(table: pd.DataFrame, out: str | os.PathLike, faces: int = 6, seed: int = 0) -> None:
    """Draw ``faces`` training faces, one row each, with all their variants and landmarks.

    Faces are drawn round-robin from the data sets (a fixed draw for ``seed``). Landmarks are
    coloured by the scheme's groups (jaw, brows, nose, eyes, lips) so that a flip that failed to
    swap left and right shows as swapped colours; points marked not visible are drawn as grey
    crosses. Column titles name the variant and whether it was flipped.

    Args:
        table: the augment stage's table (``image_path``, ``landmarks``, ``visible``, ``variant``, ...).
        out: PNG path, written atomically.
        faces: number of rows.
    """
    rng = np.random.default_rng(seed)
    by_ds = {d: list(rng.permutation(g["face_id"].unique())) for d, g in table.groupby("dataset")}
    chosen: list[str] = []
    while len(chosen) < faces and any(by_ds.values()):
        for ids in by_ds.values():
            if ids and len(chosen) < faces:
                chosen.append(ids.pop(0))
    ncol = int(table["variant"].max()) + 1
    fig, axes = plt.subplots(len(chosen), ncol, figsize=(1.7 * ncol, 1.8 * len(chosen)), squeeze=False)
    colours = plt.get_cmap("tab10")
    for r, fid in enumerate(chosen):
        rows = table[table["face_id"] == fid].sort_values("variant")
        for _, row in rows.iterrows():
            ax = axes[r, int(row["variant"])]
            try:
                img = read_image(row["image_path"])
            except ImageReadError:
                continue
            ax.imshow(img)
            pts, vis = np.asarray(row["landmarks"]), np.asarray(row["visible"], dtype=bool)
            scheme = get_scheme(row["scheme"])
            groups = scheme.groups or {"points": tuple(range(scheme.num_points))}
            for gi, idx in enumerate(groups.values()):
                idx = np.asarray(idx)
                v = idx[vis[idx]]
                ax.scatter(pts[v, 0], pts[v, 1], s=3, color=colours(gi % 10), linewidths=0)
            ax.scatter(pts[~vis, 0], pts[~vis, 1], s=6, marker="x", color="0.6", linewidths=0.6)
            s = img.shape[0]
            ax.set_xlim(-0.5, s - 0.5)
            ax.set_ylim(s - 0.5, -0.5)
            if row["variant"] == 0:
                title = f"{row['dataset']}/{row['subset']}\ncrop"
            else:
                title = f"v{row['variant']}" + (" flip" if row["flipped"] else "")
            ax.set_title(title, fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle("augment: training crops (left) and their variants; colours = landmark groups", fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
