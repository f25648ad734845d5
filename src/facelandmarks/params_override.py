"""``key.sub=value`` overrides of params.yaml, as ``dvc exp run -S`` takes them.

Comments and key order of params.yaml are kept (ruamel.yaml round trip).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from ruamel.yaml import YAML

from facelandmarks.fsutil import atomic_path

__all__ = ["parse_override", "apply_overrides"]


def parse_override(text: str) -> tuple[list[str], object]:
    """``"train.epochs=3"`` -> ``(["train", "epochs"], 3)``; the value is parsed as YAML.

    Raises:
        ValueError: no ``=`` or an empty key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r}: expected key=value (e.g. train.epochs=3)")
    return key.strip().split("."), yaml.safe_load(value)


def apply_overrides(path: str | os.PathLike, overrides: list[str]) -> None:
    """Write overrides into a params file atomically.

    A list element is addressed by its index (``download.datasets.0.max_photos=10``). The last key
    may be new (stages validate their sections and reject unknown keys).

    Raises:
        KeyError: a path through a missing key or index.
        ValueError: a malformed override.
    """
    rt = YAML()
    rt.preserve_quotes = True
    p = Path(path)
    data = rt.load(p.read_text())
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value  # a new key is allowed; each stage's params model rejects unknown ones
    with atomic_path(p) as tmp:
        with open(tmp, "w") as f:
            rt.dump(data, f)
