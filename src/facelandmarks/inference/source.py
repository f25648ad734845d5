"""Where a model comes from: a local checkpoint, a folder, or an MLflow model URI.

Accepted forms of ``uri``:

* a checkpoint file written by :func:`facelandmarks.model.checkpoint.save_checkpoint`
  (``models/finetune/model.pt``);
* a folder holding ``model.pt`` (``models/finetune``) or an MLflow model folder (an ``MLmodel`` file
  whose ``python_function`` flavour names the checkpoint as its ``data``, as
  :func:`facelandmarks.registry.log_model.log_landmark_model` writes it);
* an MLflow URI: ``models:/facelandmarks@champion``, ``models:/facelandmarks/3``, ``runs:/<id>/model``,
  or any artifact URI MLflow can download (``s3://...``, ``mlflow-artifacts:/...``). The tracking and
  registry server are MLflow's usual ones (``MLFLOW_TRACKING_URI``) unless ``tracking_uri`` is given.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

__all__ = ["ModelSourceError", "checkpoint_in_folder", "local_checkpoint"]

CHECKPOINT_NAME = "model.pt"


class ModelSourceError(ValueError):
    """A model URI or path that does not lead to a facelandmarks checkpoint; the message names it."""


def checkpoint_in_folder(folder: str | os.PathLike) -> Path:
    """The checkpoint inside a model folder.

    Args:
        folder: ``models/<stage>`` (holds ``model.pt``) or an MLflow model folder (holds ``MLmodel``).
    Returns:
        path of the checkpoint file.
    Raises:
        ModelSourceError: no checkpoint found (the message names the folder).
    """
    d = Path(folder)
    mlmodel = d / "MLmodel"
    if mlmodel.is_file():
        meta = yaml.safe_load(mlmodel.read_text()) or {}
        data = ((meta.get("flavors") or {}).get("python_function") or {}).get("data")
        if data and (d / data).is_file():
            return d / data
        if data and (d / data).is_dir() and (d / data / CHECKPOINT_NAME).is_file():
            return d / data / CHECKPOINT_NAME
    if (d / CHECKPOINT_NAME).is_file():
        return d / CHECKPOINT_NAME
    found = sorted(d.rglob(CHECKPOINT_NAME))
    if len(found) == 1:
        return found[0]
    raise ModelSourceError(
        f"{d}: no facelandmarks checkpoint ({CHECKPOINT_NAME}) in this folder"
        + (f"; several found: {[str(p) for p in found]}" if found else "")
    )


def _registry_download_uri(uri: str, tracking_uri: str | None) -> str:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> the version's artifact location, looked up in the
    registry at ``tracking_uri`` (MLflow 3's ``download_artifacts`` resolves such URIs in the process-wide
    registry, whatever ``registry_uri`` it is given); other URIs are returned unchanged."""
    if not tracking_uri or not uri.startswith("models:/"):
        return uri
    import mlflow

    name, _, rest = uri[len("models:/"):].partition("/")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if "@" in name:
        name, alias = name.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    elif rest.split("/")[0].isdigit():
        version, _, rest = rest.partition("/")
    else:  # a logged model id (models:/m-...) or a stage: MLflow resolves those itself
        return uri
    base = client.get_model_version_download_uri(name, version)
    return base.rstrip("/") + ("/" + rest if rest else "")


@contextlib.contextmanager
def local_checkpoint(uri: str | os.PathLike, tracking_uri: str | None = None) -> Iterator[Path]:
    """Yield a local path of the checkpoint ``uri`` points at (downloaded into a temporary folder if remote).

    The temporary download is removed when the ``with`` block ends: load the checkpoint inside it.

    Args:
        uri: see the module docstring.
        tracking_uri: MLflow tracking (and registry) URI for ``models:/`` and ``runs:/`` URIs.
    Raises:
        ModelSourceError: the path does not exist, the URI cannot be resolved or downloaded (e.g. no
            model version has that alias), or it holds no checkpoint.
    """
    text = os.fspath(uri)
    p = Path(text).expanduser()
    if p.exists():
        yield p if p.is_file() else checkpoint_in_folder(p)
        return
    if "://" not in text and not text.startswith(("models:/", "runs:/")):
        raise ModelSourceError(f"{text}: no such file or folder, and not an MLflow model URI (models:/NAME@ALIAS)")
    import mlflow

    tmp = Path(tempfile.mkdtemp(prefix="facelandmarks-model-"))
    try:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=_registry_download_uri(text, tracking_uri), dst_path=str(tmp), tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
        except Exception as e:  # MLflow raises MlflowException, OSError, ... for unknown names/aliases
            where = tracking_uri or mlflow.get_tracking_uri()
            raise ModelSourceError(f"{text}: could not download the model from MLflow at {where}: {e}") from e
        local_path = Path(local)
        yield local_path if local_path.is_file() else checkpoint_in_folder(local_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
