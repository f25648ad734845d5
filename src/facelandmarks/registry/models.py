"""Registered model versions: logging a checkpoint, finding a version by its checkpoint, the champion alias.

A version's tags record what it is and how it was judged:

* ``checkpoint_sha256``: sha256 of the checkpoint file (a repeated ``register`` finds the version again
  instead of registering the same weights twice);
* ``compare.metric``, ``compare.value``, ``compare.faces``, ``compare.split``: the number it was judged by
  when it was registered (the decision itself re-measures the champion on the current split).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facelandmarks.fsutil import sha256_file

__all__ = ["SHA_TAG", "current_champion", "find_version", "log_landmark_model", "sha256_file"]

SHA_TAG = "checkpoint_sha256"




def _requirements() -> list[str]:
    from importlib import metadata

    reqs = []
    for dist in ("facelandmarks", "torch", "timm", "facenet-pytorch", "opencv-python-headless", "numpy", "pydantic", "mlflow"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def log_landmark_model(checkpoint: str | os.PathLike, registered_model_name: str | None = None,
                       name: str = "model", tags: dict[str, str] | None = None) -> Any:
    """Log a checkpoint as an MLflow model in the active run, optionally registering it.

    The model is a ``python_function`` model whose ``data`` is the checkpoint file and whose loader is
    :mod:`facelandmarks.registry.pyfunc`; :meth:`facelandmarks.inference.FaceLandmarker.load` reads the
    checkpoint straight out of it.

    Args:
        checkpoint: ``models/finetune/model.pt``.
        registered_model_name: register a new version of this model (None: log only).
        name: the logged model's name within the run.
        tags: tags of the logged model.
    Returns:
        MLflow's ``ModelInfo`` (``registered_model_version`` set when registered).
    Raises:
        FileNotFoundError: no checkpoint file.
    """
    import mlflow

    p = Path(checkpoint)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: checkpoint not found (run the finetune stage)")
    return mlflow.pyfunc.log_model(
        name=name,
        loader_module="facelandmarks.registry.pyfunc",
        data_path=str(p),
        pip_requirements=_requirements(),
        registered_model_name=registered_model_name,
        tags=tags,
    )


def find_version(client: Any, model_name: str, sha256: str) -> Any | None:
    """The newest version of ``model_name`` holding the checkpoint with this sha256, or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{model_name}' and tags.{SHA_TAG} = '{sha256}'")
    except MlflowException:  # the registered model does not exist yet
        return None
    return max(found, key=lambda v: int(v.version)) if found else None


def current_champion(client: Any, model_name: str, alias: str) -> Any | None:
    """The version carrying ``alias``, or None when there is none (or no such registered model)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
