"""The annotation table every stage speaks (``../shared/DESIGN.md``, "The table that every stage speaks").

One row per annotated face, stored as parquet:

==============  ==========================================================================
column          meaning
==============  ==========================================================================
face_id         unique string id, e.g. ``300w/afw/1051618982_1``
dataset         data set name from params (``300w``, ``infanface``, ``youtube_faces68``, ``caricature``)
subset          source subset (``afw``, ``helen``, ``ads``, ``google2``, ``youtube2``, ...)
split           ``train`` / ``val`` / ``test`` (assigned by ``group``)
photo_id        id of the photo; faces of one photo share it
group           split group: faces that must not be split apart (same photo, ad, video or person;
                see :mod:`facelandmarks.data.sources`); a group never straddles two splits
image_path      path of the photo, relative to the project root (or absolute)
image_width     int, pixels (raw frame, EXIF orientation NOT applied)
image_height    int, pixels
bbox            ``(4,) float32`` x0, y0, x1, y1: tight box around the landmarks, 0-based pixels
landmarks       ``(K, 2) float32`` 0-based pixels, pixel centres at integers
visible         ``(K,) bool``
scheme          landmark scheme name (``ibug68``)
turned, occluded, expressive, tilted   nullable bool, InfAnFace condition flags (null elsewhere)
==============  ==========================================================================

In memory (after :func:`read_table`) ``bbox``, ``landmarks`` and ``visible`` hold numpy arrays; on
disk they are nested lists. Later stages add columns (``crops.parquet`` adds crop geometry); the
same reader and writer handle them: any column whose values are numpy arrays is stored as nested
lists and restored to arrays of the right shape.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facelandmarks.fsutil import atomic_path

__all__ = [
    "ANNOTATION_COLUMNS",
    "FLAG_COLUMNS",
    "write_table",
    "read_table",
    "stack_column",
    "landmarks_bbox",
]

ANNOTATION_COLUMNS = [
    "face_id",
    "dataset",
    "subset",
    "split",
    "photo_id",
    "group",
    "image_path",
    "image_width",
    "image_height",
    "bbox",
    "landmarks",
    "visible",
    "scheme",
]
FLAG_COLUMNS = ["turned", "occluded", "expressive", "tilted"]


def landmarks_bbox(landmarks: np.ndarray) -> np.ndarray:
    """Tight box around points.

    Args:
        landmarks: ``(..., K, 2)`` pixels.
    Returns:
        ``(..., 4) float32`` (x0, y0, x1, y1).
    """
    pts = np.asarray(landmarks, dtype=np.float32)
    return np.concatenate([pts.min(axis=-2), pts.max(axis=-2)], axis=-1).astype(np.float32)


def _array_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if len(df) and isinstance(df[c].iloc[0], np.ndarray)]


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table atomically as parquet.

    Array-valued cells (``np.ndarray`` of any shape) are written as nested lists; their dtype is
    kept via the arrow type (float32 stays float32, bool stays bool).

    Raises:
        ValueError: an array column mixes shapes of different rank.
    """
    out = df.copy()
    arrays = _array_columns(out)
    schema_fields = []
    for c in out.columns:
        if c in arrays:
            first = out[c].iloc[0]
            ndim = first.ndim
            if any(np.ndim(v) != ndim for v in out[c]):
                raise ValueError(f"column {c!r}: arrays of different rank cannot be stored together")
            leaf = pa.from_numpy_dtype(first.dtype)
            typ = leaf
            for _ in range(ndim):
                typ = pa.list_(typ)
            schema_fields.append((c, typ))
            out[c] = [v.tolist() for v in out[c]]
    table = pa.Table.from_pandas(out, preserve_index=False)
    for name, typ in schema_fields:
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, pa.field(name, typ), table.column(name).cast(typ))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _nested_depth(typ: pa.DataType) -> tuple[int, pa.DataType]:
    depth = 0
    while pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        typ = typ.value_type
        depth += 1
    return depth, typ


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_table`, restoring nested lists to numpy arrays.

    Returns:
        DataFrame; e.g. ``landmarks`` cells are ``(K, 2) float32``, ``visible`` cells ``(K,) bool``.
    Raises:
        FileNotFoundError: no such file (the message names it and the stage that makes it).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: table not found (run the stage that writes it, e.g. `dvc repro`)")
    table = pq.read_table(p)
    df = table.to_pandas()
    for field in table.schema:
        depth, leaf = _nested_depth(field.type)
        if depth == 0:
            continue
        dtype = leaf.to_pandas_dtype()
        df[field.name] = [
            None if v is None else np.array(v.tolist() if hasattr(v, "tolist") else v, dtype=dtype)
            for v in table.column(field.name).to_pylist()
        ]
    return df


def stack_column(df: pd.DataFrame, column: str = "landmarks") -> np.ndarray:
    """Stack an array column into one array.

    Returns:
        ``(N, *shape)``, e.g. ``(N, K, 2) float32`` for ``landmarks``.
    Raises:
        ValueError: rows have different shapes (mixed schemes).
    """
    if len(df) == 0:
        raise ValueError(f"column {column!r}: empty table")
    return np.stack(list(df[column].to_numpy()))
