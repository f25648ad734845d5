"""Reading ``params.yaml``: every knob of every stage (DVC params).

Each stage validates its own section with its own pydantic model (defined beside the stage's code),
so that a typo in a key fails loudly with the file and key named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["load_params", "section", "StrictModel"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for params sections: unknown keys are errors."""

    model_config = {"extra": "forbid", "protected_namespaces": ()}


def load_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Load the whole params file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a YAML mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: params file not found")
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a YAML mapping at top level")
    return data


def section(params: dict[str, Any], name: str, model: type[M], source: str = "params.yaml") -> M:
    """Validate ``params[name]`` with ``model``.

    Raises:
        ValueError: the section is missing or invalid; the message names the file and the keys.
    """
    if name not in params:
        raise ValueError(f"{source}: missing section {name!r}")
    try:
        return model.model_validate(params[name] or {})
    except ValidationError as e:
        raise ValueError(f"{source}: invalid section {name!r}:\n{e}") from e
