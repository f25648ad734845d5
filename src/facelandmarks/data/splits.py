"""Deterministic train/val/test splits by source group.

Faces of one ``group`` always share a split. The group is what makes two faces not independent
(:mod:`facelandmarks.data.sources`): the photo for 300-W (AFW photos hold several faces; a HELEN
file), the ad or video for InfAnFace, the person for ``youtube_faces68``, the file for ``caricature``.
Within each data set, groups are ordered by ``sha256(seed:dataset:group)`` and the first
``round(val * n)`` groups go to ``val``, the next ``round(test * n)`` to ``test``, the rest to
``train`` (``n`` = groups of the data set): exact fractions of groups, the same result on every
machine, and independent of file listing order. Fractions of faces follow only approximately when
groups differ in size.
"""

from __future__ import annotations

import hashlib

import pandas as pd

__all__ = ["SplitLeakError", "assign_splits", "check_group_splits"]


class SplitLeakError(ValueError):
    """A split group (photo, ad, video, person) has faces in two splits."""


def _key(seed: int, dataset: str, group: str) -> str:
    return hashlib.sha256(f"{seed}:{dataset}:{group}".encode()).hexdigest()


def assign_splits(df: pd.DataFrame, val: float, test: float, seed: int) -> pd.Series:
    """Assign a split to each face by its group.

    Args:
        df: table with ``dataset`` and ``group`` columns.
        val, test: fractions of groups per data set, each in [0, 1), ``val + test < 1``.
        seed: changes the assignment.
    Returns:
        ``pd.Series`` of ``"train" | "val" | "test"`` aligned with ``df.index``.
    Raises:
        ValueError: fractions out of range, or no ``group`` column.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"split fractions val={val}, test={test} must be in [0, 1) and sum below 1")
    if "group" not in df.columns:
        raise ValueError("assign_splits: the table has no `group` column (rebuild it with the download stage)")
    out = pd.Series("train", index=df.index, dtype=object)
    for dataset, sub in df.groupby("dataset", sort=True):
        groups = sorted(sub["group"].unique(), key=lambda g: _key(seed, str(dataset), str(g)))
        n = len(groups)
        n_val, n_test = round(val * n), round(test * n)
        split_of = {g: "val" for g in groups[:n_val]}
        split_of.update({g: "test" for g in groups[n_val : n_val + n_test]})
        out.loc[sub.index] = sub["group"].map(split_of).fillna("train")
    return out


def check_group_splits(df: pd.DataFrame) -> None:
    """Check that no group straddles two splits.

    Args:
        df: table with ``dataset``, ``group``, ``split`` (and ``face_id``) columns.
    Raises:
        SplitLeakError: some group has faces in more than one split; the message names up to five
            such groups with their splits and the number of leaking groups.
    """
    n_splits = df.groupby(["dataset", "group"], sort=True)["split"].nunique()
    leaks = n_splits[n_splits > 1]
    if len(leaks):
        shown = []
        for dataset, group in leaks.index[:5]:
            rows = df[(df["dataset"] == dataset) & (df["group"] == group)]
            shown.append(f"{group} ({dataset}): " + ", ".join(
                f"{s}={int(c)}" for s, c in rows["split"].value_counts().sort_index().items()))
        raise SplitLeakError(
            f"{len(leaks)} split group(s) straddle two splits, so faces of one source would be both "
            f"trained and scored: {'; '.join(shown)}"
        )
