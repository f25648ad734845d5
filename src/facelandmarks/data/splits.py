"""Deterministic train/val/test splits by photo.

Faces of one photo (AFW photos hold several) always share a split. Within each data set, photos are
ordered by ``sha256(seed:dataset:photo_id)`` and the first ``round(val * n)`` go to ``val``, the next
``round(test * n)`` to ``test``, the rest to ``train``: exact fractions, the same result on every
machine, and independent of file listing order.
"""

from __future__ import annotations

import hashlib

import pandas as pd

__all__ = ["assign_splits"]


def _key(seed: int, dataset: str, photo_id: str) -> str:
    return hashlib.sha256(f"{seed}:{dataset}:{photo_id}".encode()).hexdigest()


def assign_splits(df: pd.DataFrame, val: float, test: float, seed: int) -> pd.Series:
    """Assign a split to each face by its photo.

    Args:
        df: table with ``dataset`` and ``photo_id`` columns.
        val, test: fractions of photos per data set, each in [0, 1), ``val + test < 1``.
        seed: changes the assignment.
    Returns:
        ``pd.Series`` of ``"train" | "val" | "test"`` aligned with ``df.index``.
    Raises:
        ValueError: fractions out of range.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"split fractions val={val}, test={test} must be in [0, 1) and sum below 1")
    out = pd.Series("train", index=df.index, dtype=object)
    for dataset, group in df.groupby("dataset", sort=True):
        photos = sorted(group["photo_id"].unique(), key=lambda p: _key(seed, str(dataset), str(p)))
        n = len(photos)
        n_val, n_test = round(val * n), round(test * n)
        split_of = {p: "val" for p in photos[:n_val]}
        split_of.update({p: "test" for p in photos[n_val : n_val + n_test]})
        out.loc[group.index] = group["photo_id"].map(lambda p: split_of.get(p, "train"))
    return out
