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
* ``youtube_faces68_csv``: ``root/<folder>_frames_keypoints.csv`` + ``root/<folder>/`` for the folders
  ``training`` and ``test`` (or ``subsets``), 0-based pixels (:mod:`facelandmarks.io.youtube_faces68`).
* ``caricature_txt``: ``root/<n>.txt`` (68 lines ``x y``, 0-based) + ``root/<n>.jpg``.

Every face also gets a split ``group``: faces of one group always share a split (:mod:`.splits`).
300-W and dlib XML: the photo (AFW ``<photo>_<k>``, HELEN file); InfAnFace: the ad or video the
still comes from (:func:`facelandmarks.io.infanface.infanface_groups`); youtube_faces68: the person,
across both folders; caricature: the file. ``same_group`` in params merges groups the files do not
reveal (caricature: drawings of one person by different artists, found by eye).

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
from facelandmarks.io.caricature import read_caricature_txt
from facelandmarks.io.dlib_xml import read_dlib_xml
from facelandmarks.io.infanface import INFANFACE_FLAGS, infanface_groups, read_infanface_labels
from facelandmarks.io.pts import AnnotationError, read_pts
from facelandmarks.io.youtube_faces68 import YOUTUBE_FACES68_FOLDERS, read_youtube_faces68_csv
from facelandmarks.params import StrictModel

__all__ = ["DatasetSource", "RawFace", "load_source", "materialise"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


class DatasetSource(StrictModel):
    """One entry of ``download.datasets`` in params.yaml."""

    name: str
    format: Literal["pts", "dlib_xml", "infanface_csv", "youtube_faces68_csv", "caricature_txt"]
    root: str
    subsets: list[str] = []
    subset_names: dict[str, str] = {}
    xml: str | None = None
    url: str | None = None
    sha256: str | None = None
    max_photos: int | None = None  # keep only the first N photos (sorted by id): tiny runs and tests
    # split groups to merge, each a list of group ids without the ``<name>/`` prefix (caricature: file
    # stems), for sources the files do not reveal (e.g. several drawings of one person)
    same_group: list[list[str]] = []

    @model_validator(mode="after")
    def _check(self) -> "DatasetSource":
        if self.format == "dlib_xml" and not self.xml:
            raise ValueError(f"data set {self.name!r}: format dlib_xml needs `xml` (the labels file under root)")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256):
            raise ValueError(f"data set {self.name!r}: sha256 must be 64 hex digits")
        return self


RawFace = dict  # keys: dataset, subset, face_id, photo_id, group, image_path, landmarks, visible, flags...


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
                    "group": f"{src.name}/{subset}/{_photo_id(pts_path.stem)}",
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
                "group": f"{src.name}/{stem}",
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
    groups = infanface_groups(list(df["image_set"]), list(df["filename"]), list(df["image_path"]))
    for row, group in zip(df.itertuples(index=False), groups):
        stem = f"{row.image_set}/{Path(row.filename).stem}"
        face = {
            "dataset": src.name,
            "subset": row.image_set,
            "face_id": f"{src.name}/{stem}",
            "photo_id": f"{src.name}/{stem}",
            "group": f"{src.name}/{group}",
            "image_path": _rel(Path(row.image_path)),
            "annotation_path": f"{csv}:{row.image_set}/{row.filename}",
            "landmarks": row.landmarks,
            "visible": np.ones(num_points, dtype=bool),
        }
        for flag in INFANFACE_FLAGS:
            face[flag] = getattr(row, flag)
        faces.append(face)
    return faces


def _load_youtube_faces68(src: DatasetSource, problems: list[Problem], num_points: int) -> list[RawFace]:
    root = Path(src.root)
    faces = []
    for folder in src.subsets or list(YOUTUBE_FACES68_FOLDERS):
        csv = root / f"{folder}_frames_keypoints.csv"
        try:
            frames, bad = read_youtube_faces68_csv(csv, num_points=num_points)
        except (AnnotationError, FileNotFoundError) as e:
            problems.append(Problem(src.name, str(csv), str(e), "parse_error"))
            continue
        problems.extend(Problem(src.name, where, why, "parse_error") for where, why in bad)
        subset = src.subset_names.get(folder, src.name)
        for row in frames.itertuples(index=False):
            image = root / folder / row.filename
            if not image.is_file():
                problems.append(Problem(src.name, f"{csv}:{row.filename}", f"no photo {image}", "missing_image"))
                continue
            stem = Path(row.filename).stem
            faces.append(
                {
                    "dataset": src.name,
                    "subset": subset,
                    "face_id": f"{src.name}/{folder}/{stem}",
                    "photo_id": f"{src.name}/{folder}/{stem}",
                    "group": f"{src.name}/{row.person}",
                    "image_path": _rel(image),
                    "annotation_path": f"{csv}:{row.filename}",
                    "landmarks": row.landmarks,
                    "visible": np.ones(num_points, dtype=bool),
                }
            )
    return faces


def _load_caricature(src: DatasetSource, problems: list[Problem], num_points: int) -> list[RawFace]:
    root = Path(src.root)
    faces = []
    for txt in sorted(root.glob("*.txt"), key=lambda p: (len(p.stem), p.stem)):
        image = next((txt.with_suffix(s) for s in IMAGE_SUFFIXES if txt.with_suffix(s).exists()), None)
        if image is None:
            problems.append(Problem(src.name, str(txt), "no photo beside the .txt file", "missing_image"))
            continue
        try:
            pts = read_caricature_txt(txt, num_points=num_points)
        except AnnotationError as e:
            problems.append(Problem(src.name, str(txt), str(e), "parse_error"))
            continue
        faces.append(
            {
                "dataset": src.name,
                "subset": src.name,
                "face_id": f"{src.name}/{txt.stem}",
                "photo_id": f"{src.name}/{txt.stem}",
                "group": f"{src.name}/{txt.stem}",
                "image_path": _rel(image),
                "annotation_path": str(txt),
                "landmarks": pts,
                "visible": np.ones(num_points, dtype=bool),
            }
        )
    return faces


def _merge_groups(src: DatasetSource, faces: list[RawFace]) -> None:
    """Apply ``src.same_group`` in place: every listed group takes the id of the first one listed.

    Raises:
        ValueError: a listed id is no group of the data set, or is listed twice.
    """
    known = {f["group"] for f in faces}
    remap: dict[str, str] = {}
    for members in src.same_group:
        keys = [f"{src.name}/{m}" for m in members]
        unknown = [m for m, k in zip(members, keys) if k not in known]
        if unknown:
            example = min(known).removeprefix(f"{src.name}/") if known else "none"
            raise ValueError(f"data set {src.name!r}: same_group names {unknown}, which are not groups of its "
                             f"faces (ids look like {example!r})")
        for m, k in zip(members, keys):
            if k in remap:
                raise ValueError(f"data set {src.name!r}: same_group lists {m!r} twice")
            remap[k] = keys[0]
    for f in faces:
        f["group"] = remap.get(f["group"], f["group"])


def load_source(src: DatasetSource, num_points: int) -> tuple[list[RawFace], list[Problem]]:
    """Read every annotated face of one data set (no image is opened here).

    Args:
        src: the params entry; ``src.root`` must exist (see :func:`materialise`).
        num_points: K of the scheme.
    Returns:
        ``(faces, problems)``; faces are limited to the first ``src.max_photos`` photos when set, and
        carry their split ``group`` (``src.same_group`` applied).
    Raises:
        ValueError: ``src.same_group`` names an unknown group or one twice.
    """
    problems: list[Problem] = []
    if src.format == "pts":
        faces = _load_pts(src, problems)
    elif src.format == "dlib_xml":
        faces = _load_dlib_xml(src, problems, num_points)
    elif src.format == "youtube_faces68_csv":
        faces = _load_youtube_faces68(src, problems, num_points)
    elif src.format == "caricature_txt":
        faces = _load_caricature(src, problems, num_points)
    else:
        faces = _load_infanface(src, problems, num_points)
    if src.same_group:
        _merge_groups(src, faces)
    if src.max_photos is not None:
        keep = set(sorted({f["photo_id"] for f in faces})[: src.max_photos])
        faces = [f for f in faces if f["photo_id"] in keep]
    return faces, problems
