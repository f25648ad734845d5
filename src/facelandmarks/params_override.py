"""``key.sub=value`` overrides of params.yaml, as ``dvc exp run -S`` takes them.

Comments and key order of params.yaml are kept (ruamel.yaml round trip). New lists and mappings are written in
flow style (``[a, b]``, ``{k: v}``), as params.yaml writes them: a block-style value would take the key's end-of-line
comment into its last item, which a later override then breaks (ruamel.yaml 0.18 merged the next line into it).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

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


def _flow(value: object) -> object:
    """Lists and dicts (nested too) as ruamel nodes in flow style; other values as they are."""
    if isinstance(value, dict):
        node = CommentedMap((k, _flow(v)) for k, v in value.items())
    elif isinstance(value, list):
        node = CommentedSeq(_flow(v) for v in value)
    else:
        return value
    node.fa.set_flow_style()
    return node


def apply_overrides(path: str | os.PathLike, overrides: list[str]) -> None:
    """Write overrides into a params file atomically.

    A list element is addressed by its index (``download.datasets.0.max_photos=10``). The last key
    may be new (stages validate their sections and reject unknown keys).

    Raises:
        KeyError: a path through a missing key or index.
        ValueError: a malformed override, or a result that would not read back as written (the file is then
            left as it was).
    """
    rt = YAML()
    rt.preserve_quotes = True
    p = Path(path)
    data = rt.load(p.read_text())
    for text in overrides:
        keys, value = parse_override(text)
        value = _flow(value)
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
        try:
            back = yaml.safe_load(Path(tmp).read_text())
            wanted = {tuple(keys): value for keys, value in map(parse_override, overrides)}  # the last one wins
            for keys, value in wanted.items():
                if any(len(other) > len(keys) and other[:len(keys)] == keys for other in wanted):
                    continue  # a later override changes part of this value
                node = back
                for k in keys:
                    node = node[int(k)] if isinstance(node, list) else node[k]
                if node != value:
                    raise ValueError(f"{'.'.join(keys)} reads back as {node!r}, not {value!r}")
        except Exception as e:
            raise ValueError(f"{p}: the overrides {overrides} would not read back as written ({e}); "
                             f"the file is unchanged") from e
