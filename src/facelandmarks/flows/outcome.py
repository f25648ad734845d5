"""What a pipeline run produced: which report files it rewrote, and their content.

A stage that DVC skipped (nothing changed) leaves its report as it was; the flow must not present last
week's register decision as this run's. A report counts as updated when its file was replaced during
the run (stages write atomically, so a rewrite is a new inode and mtime).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["snapshot", "updated", "read_json"]

Stamp = tuple[int, int] | None


def snapshot(root: str | os.PathLike, paths: Iterable[str]) -> dict[str, Stamp]:
    """``{path: (inode, mtime_ns) or None when absent}`` for each path relative to ``root``."""
    out: dict[str, Stamp] = {}
    for rel in paths:
        try:
            st = (Path(root) / rel).stat()
            out[rel] = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            out[rel] = None
    return out


def updated(before: dict[str, Stamp], after: dict[str, Stamp]) -> list[str]:
    """Paths that exist in ``after`` and differ from ``before`` (written during the run)."""
    return [p for p, stamp in after.items() if stamp is not None and stamp != before.get(p)]


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON report as a dict, or None when the file does not exist.

    Raises:
        ValueError: the file is not a JSON object (names the file).
    """
    p = Path(path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object")
    return data
