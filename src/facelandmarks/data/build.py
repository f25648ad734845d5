"""The ``download`` stage: data sets named in params -> one validated annotation table.

Steps: materialise each source (DVC-tracked ``data/raw`` or a URL archive), parse every face, open
every photo once (its size, and whether it can be read at all), validate each face, assign splits
by source group (photo, ad, video, person; checked that no group straddles two splits), and write
``data/interim/annotations.parquet`` plus ``reports/data_validation.json``.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pandas as pd
from pydantic import Field
from tqdm import tqdm

from facelandmarks.data.sources import DatasetSource, load_source, materialise
from facelandmarks.data.splits import assign_splits, check_group_splits
from facelandmarks.data.table import ANNOTATION_COLUMNS, FLAG_COLUMNS, landmarks_bbox
from facelandmarks.data.validate import Problem, check_landmarks
from facelandmarks.io.images import ImageReadError, read_image
from facelandmarks.io.infanface import INFANFACE_FLAGS
from facelandmarks.params import StrictModel
from facelandmarks.schemes import get_scheme

__all__ = ["DownloadParams", "SplitParams", "build_annotations"]


class SplitParams(StrictModel):
    """Fractions of split groups (per data set) in ``val`` and ``test``; the rest is ``train``."""

    val: float = Field(0.15, ge=0, lt=1)
    test: float = Field(0.15, ge=0, lt=1)


class ValidationParams(StrictModel):
    max_outside: float = Field(0.1, ge=0)


class PreviewParams(StrictModel):
    faces_per_dataset: int = Field(8, ge=1)
    out: str = "reports/figures/data_preview.png"


class DownloadParams(StrictModel):
    """The ``download`` section of params.yaml."""

    cache_dir: str = "data/external"
    datasets: list[DatasetSource]
    splits: SplitParams = SplitParams()
    validation: ValidationParams = ValidationParams()
    preview: PreviewParams = PreviewParams()
    table: str = "data/interim/annotations.parquet"
    report: str = "reports/data_validation.json"


def _image_sizes(paths: list[str], progress: bool) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Decode each distinct photo once: ``{path: (width, height)}`` and ``{path: error}``."""
    sizes, errors = {}, {}
    for p in tqdm(sorted(set(paths)), desc="checking photos", unit="photo", disable=not progress):
        try:
            img = read_image(p)
            sizes[p] = (img.shape[1], img.shape[0])
        except ImageReadError as e:
            errors[p] = str(e)
    return sizes, errors


def build_annotations(params: DownloadParams, scheme_name: str, seed: int, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Build the annotation table and the validation report.

    Args:
        params: the validated ``download`` section.
        scheme_name: landmark scheme of every data set (``ibug68``).
        seed: split seed.
    Returns:
        ``(table, report)``: the table has :data:`ANNOTATION_COLUMNS` + flag columns, one row per
        valid face; the report counts faces read / valid / invalid per data set and reason, and lists
        each invalid face with its file and reason, and the faces and groups of each split.
    Raises:
        FileNotFoundError: a data set's folder is missing and it has no URL (see ``materialise``).
        ValueError: no valid face at all, or a duplicate ``face_id``.
        facelandmarks.data.splits.SplitLeakError: a split group straddles two splits.
    """
    t0 = time.perf_counter()
    scheme = get_scheme(scheme_name)
    faces, problems = [], []
    for src in params.datasets:
        materialise(src, params.cache_dir, progress=progress)
        f, p = load_source(src, scheme.num_points)
        faces += f
        problems += p
    sizes, unreadable = _image_sizes([f["image_path"] for f in faces], progress)
    rows = []
    for f in faces:
        if f["image_path"] in unreadable:
            problems.append(Problem(f["dataset"], f["image_path"], unreadable[f["image_path"]], "unreadable_image"))
            continue
        w, h = sizes[f["image_path"]]
        bad = check_landmarks(f["landmarks"], f["visible"], scheme.num_points, w, h, params.validation.max_outside)
        if bad is not None:
            problems.append(Problem(f["dataset"], f["annotation_path"], bad[1], bad[0]))
            continue
        pts = np.asarray(f["landmarks"], dtype=np.float32)
        vis = np.asarray(f["visible"], dtype=bool)
        row = {
            "face_id": f["face_id"],
            "dataset": f["dataset"],
            "subset": f["subset"],
            "photo_id": f["photo_id"],
            "group": f["group"],
            "image_path": f["image_path"],
            "image_width": int(w),
            "image_height": int(h),
            "bbox": landmarks_bbox(pts[vis]),
            "landmarks": pts,
            "visible": vis,
            "scheme": scheme.name,
        }
        for flag in INFANFACE_FLAGS:
            row[flag] = f.get(flag, pd.NA)
        rows.append(row)
    if not rows:
        raise ValueError("download: no valid annotated face in any data set (see the problems in the report)")
    df = pd.DataFrame(rows)
    if df["face_id"].duplicated().any():
        dup = df.loc[df["face_id"].duplicated(), "face_id"].iloc[0]
        raise ValueError(f"download: duplicate face_id {dup!r} (two data sets with the same name?)")
    df["split"] = assign_splits(df, params.splits.val, params.splits.test, seed)
    check_group_splits(df)
    for flag in FLAG_COLUMNS:
        df[flag] = df[flag].astype("boolean")
    df = df[ANNOTATION_COLUMNS + FLAG_COLUMNS].sort_values("face_id").reset_index(drop=True)
    report = _report(df, faces, problems, time.perf_counter() - t0)
    return df, report


def _report(df: pd.DataFrame, faces: list[dict], problems: list[Problem], seconds: float) -> dict:
    read = Counter(f["dataset"] for f in faces)
    datasets = {}
    for name in sorted(set(read) | set(df["dataset"]) | {p.dataset for p in problems}):
        sub = df[df["dataset"] == name]
        probs = [p for p in problems if p.dataset == name]
        datasets[name] = {
            "faces_read": read.get(name, 0),
            "faces_valid": len(sub),
            "faces_invalid": sum(1 for p in probs if p.kind not in ("missing_subset",)),
            "photos": int(sub["photo_id"].nunique()),
            "invalid_by_reason": dict(Counter(p.kind for p in probs)),
            "groups": int(sub["group"].nunique()),
            "splits": {s: int((sub["split"] == s).sum()) for s in ("train", "val", "test")},
            "groups_per_split": {s: int(sub.loc[sub["split"] == s, "group"].nunique()) for s in ("train", "val", "test")},
            "subsets": {str(k): int(v) for k, v in sub["subset"].value_counts().sort_index().items()},
        }
    return {
        "faces_valid": len(df),
        "faces_invalid": sum(d["faces_invalid"] for d in datasets.values()),
        "seconds": round(seconds, 2),
        "datasets": datasets,
        "problems": [p.as_dict() for p in problems],
    }
