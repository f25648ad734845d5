"""Data set sources: where each data set named in params lives and how to read it.

Each source yields raw face records (one per annotated face) and parse problems; validation,
splitting and the table come later (:mod:`facelandmarks.data.build`).

Formats:

* ``pts``: 300-W folders of ``<name>.pts`` + ``<name>.jpg|png`` (1-based pixels), read from
  ``root/<subset>/``. AFW's ``<photo>_<k>.jpg`` files are one photo per ``<photo>``.
* ``dlib_xml``: a dlib imglab XML file (``xml``, relative to ``root``), e.g. dlib's public
  ``ibug_300W_large_face_landmark_dataset/labels_ibug_300W_train.xml``; the subset is the first
  folder of each image path.
* ``infanface_csv``: InfAnFace ``root/labels.csv`` with ``root/images/<image-set>/<filename>``.

A source with ``url`` (and ``sha256``) is fetched and extracted into ``root`` when ``root`` is absent.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import model_validator

from facelandmarks.data.fetch import fetch_archive
from facelandmarks.data.validate import Problem
from facelandmarks.io.dlib_xml import read_dlib_xml
from facelandmarks.io.infanface import INFANFACE_FLAGS, read_infanface_labels
from facelandmarks.io.pts import AnnotationError, read_pts
from facelandmarks.params import StrictModel

__all__ = ["DatasetSource", "RawFace", "load_source", "materialise"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


class DatasetSource(StrictModel):
    """One entry of ``download.datasets`` in params.yaml."""

    name: str
    format: Literal["pts", "dlib_xml", "infanface_csv"]
    root: str
    subsets: list[str] = []
    subset_names: dict[str, str] = {}
    xml: str | None = None
    url: str | None = None
    sha256: str | None = None
    max_photos: int | None = None  # keep only the first N photos (sorted by id): tiny runs and tests

    @model_validator(mode="after")
    def _check(self) -> "DatasetSource":
        if self.format == "dlib_xml" and not self.xml:
            raise ValueError(f"data set {self.name!r}: format dlib_xml needs `xml` (the labels file under root)")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256):
            raise ValueError(f"data set {self.name!r}: sha256 must be 64 hex digits")
        return self


RawFace = dict  # keys: dataset, subset, face_id, photo_id, image_path, landmarks, visible, flags...


def _rel(path: Path) -> str:
    """Path relative to the working directory when inside it (portable tables), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def materialise(src: DatasetSource, cache_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Make sure ``src.root`` exists, fetching ``src.url`` into it when it does not.

    Raises:
        FileNotFoundError: ``root`` is absent and no ``url`` is given; the message says how to get
            the data (``dvc pull``, a remote of one's own, or a URL in params).
        facelandmarks.data.fetch.FetchError: the download failed.
    """
    root = Path(src.root)
    if root.exists():
        return root
    if src.url:
        return fetch_archive(src.url, src.sha256, cache_dir, root, progress=progress)
    raise FileNotFoundError(
        f"data set {src.name!r}: folder {root} does not exist. Run `dvc pull` to restore data/raw from "
        "the project's DVC remote; without access to it, point DVC at your own copy "
        "(`dvc remote add -d mine s3://bucket/path` or a local folder, holding the same hashes), or set "
        f"`url` and `sha256` of a public archive for this data set in params.yaml (download.datasets)."
    )


def _photo_id(stem: str) -> str:
    """``1051618982_1`` -> ``1051618982``: AFW/HELEN files are ``<photo>_<face index>``."""
    m = re.fullmatch(r"(.+)_\d+", stem)
    return m.group(1) if m else stem


def _load_pts(src: DatasetSource, problems: list[Problem]) -> list[RawFace]:
    root = Path(src.root)
    subsets = src.subsets or sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.rglob("*.pts")))
    faces = []
    for sub in subsets:
        folder = root / sub
        if not folder.is_dir():
            problems.append(Problem(src.name, str(folder), f"subset folder {sub!r} does not exist", "missing_subset"))
            continue
        for pts_path in sorted(folder.rglob("*.pts")):
            image = next((pts_path.with_suffix(s) for s in IMAGE_SUFFIXES if pts_path.with_suffix(s).exists()), None)
            if image is None:
                problems.append(Problem(src.name, str(pts_path), "no photo beside the .pts file", "missing_image"))
                continue
            try:
                pts = read_pts(pts_path)
            except AnnotationError as e:
                problems.append(Problem(src.name, str(pts_path), str(e), "parse_error"))
                continue
            subset = src.subset_names.get(sub, sub)
            faces.append(
                {
                    "dataset": src.name,
                    "subset": subset,
                    "face_id": f"{src.name}/{subset}/{pts_path.stem}",
                    "photo_id": f"{src.name}/{subset}/{_photo_id(pts_path.stem)}",
                    "image_path": _rel(image),
                    "annotation_path": str(pts_path),
                    "landmarks": pts,
                    "visible": np.ones(len(pts), dtype=bool),
                }
            )
    return faces


def _load_dlib_xml(src: DatasetSource, problems: list[Problem], num_points: int) -> list[RawFace]:
    xml = Path(src.root) / src.xml
    try:
        parsed, xml_problems = read_dlib_xml(xml, num_points=num_points)
    except (AnnotationError, FileNotFoundError) as e:
        problems.append(Problem(src.name, str(xml), str(e), "parse_error"))
        return []
    problems.extend(Problem(src.name, p["file"], p["reason"], "parse_error") for p in xml_problems)
    faces, count = [], {}
    root = Path(src.root).resolve()
    for f in parsed:
        try:
            rel = f.image_path.relative_to(root)
        except ValueError:
            rel = Path(f.image_path.name)
        sub = rel.parts[0] if len(rel.parts) > 1 else "all"
        if src.subsets and sub not in src.subsets:
            continue
        subset = src.subset_names.get(sub, sub)
        stem = str(rel.with_suffix("")).replace(os.sep, "/")
        k = count[stem] = count.get(stem, 0) + 1
        faces.append(
            {
                "dataset": src.name,
                "subset": subset,
                "face_id": f"{src.name}/{stem}#{k}",
                "photo_id": f"{src.name}/{stem}",
                "image_path": _rel(f.image_path),
                "annotation_path": str(xml),
                "landmarks": f.landmarks,
                "visible": f.visible,
            }
        )
    return faces


def _load_infanface(src: DatasetSource, problems: list[Problem], num_points: int) -> list[RawFace]:
    csv = Path(src.root) / "labels.csv"
    try:
        df = read_infanface_labels(csv, num_points=num_points)
    except (AnnotationError, FileNotFoundError) as e:
        problems.append(Problem(src.name, str(csv), str(e), "parse_error"))
        return []
    faces = []
    for row in df.itertuples(index=False):
        stem = f"{row.image_set}/{Path(row.filename).stem}"
        face = {
            "dataset": src.name,
            "subset": row.image_set,
            "face_id": f"{src.name}/{stem}",
            "photo_id": f"{src.name}/{stem}",
            "image_path": _rel(Path(row.image_path)),
            "annotation_path": f"{csv}:{row.image_set}/{row.filename}",
            "landmarks": row.landmarks,
            "visible": np.ones(num_points, dtype=bool),
        }
        for flag in INFANFACE_FLAGS:
            face[flag] = getattr(row, flag)
        faces.append(face)
    return faces


def load_source(src: DatasetSource, num_points: int) -> tuple[list[RawFace], list[Problem]]:
    """Read every annotated face of one data set (no image is opened here).

    Args:
        src: the params entry; ``src.root`` must exist (see :func:`materialise`).
        num_points: K of the scheme.
    Returns:
        ``(faces, problems)``; faces are limited to the first ``src.max_photos`` photos when set.
    """
    problems: list[Problem] = []
    if src.format == "pts":
        faces = _load_pts(src, problems)
    elif src.format == "dlib_xml":
        faces = _load_dlib_xml(src, problems, num_points)
    else:
        faces = _load_infanface(src, problems, num_points)
    if src.max_photos is not None:
        keep = set(sorted({f["photo_id"] for f in faces})[: src.max_photos])
        faces = [f for f in faces if f["photo_id"] in keep]
    return faces, problems
