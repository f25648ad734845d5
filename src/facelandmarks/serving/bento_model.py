"""The served model in the BentoML model store: the MLflow champion imported once, packed into the Bento.

A Bento built by ``facelandmarks bento`` (:mod:`facelandmarks.commands.bento`) declares one store model
(``bentoml build --arg model=<tag>``; the service's ``bentoml.models.BentoModel``), so ``bentoml build`` packs it
and the Bento serves exactly that checkpoint without asking MLflow: moving ``@champion`` later changes nothing
in a built Bento, and rolling a Bento back rolls its model back.

A store entry (:func:`import_model`):

* tag ``facelandmarks:r<registry version>-<first 16 hex of the checkpoint's sha256>``, or
  ``facelandmarks:sha-<16 hex>`` for a checkpoint that is no registry version: the same checkpoint of the same
  registry version always gets the same tag, so importing it again reuses the entry (no duplicate);
* ``model.pt``: the checkpoint, as the registry holds it (its ``ModelConfig`` carries the crop and MTCNN
  settings the model was trained with, so the Bento cuts faces alike);
* labels (strings): ``registry_name`` and ``registry_version`` (registry versions only), ``checkpoint_sha256``,
  ``backbone``, ``head``, ``scheme``, ``input_size``;
* metadata: ``model_uri`` (the pinned ``models:/NAME/VERSION``, or the checkpoint's path), ``requested_uri`` (as
  asked at the first import, e.g. ``models:/facelandmarks@champion``), ``tracking_uri``, ``checkpoint_bytes``,
  ``model_config`` (JSON of the checkpoint's ``ModelConfig``).

BentoML fixes its home folder (``BENTOML_HOME``) when it is first imported; call these functions in a process
whose environment names the store wanted (the retraining flow runs ``facelandmarks bento`` as a command).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINT_FILE", "MODEL_LABELS", "MODEL_NAME", "StoreModel", "bento_labels", "import_model",
           "model_source", "read_store_model", "store_tag"]

#: name of the facelandmarks models in the BentoML model store.
MODEL_NAME = "facelandmarks"
#: the checkpoint's file name inside a store entry.
CHECKPOINT_FILE = "model.pt"
#: Bento labels that :func:`bento_labels` derives from the packed model (callers cannot set them).
MODEL_LABELS = ("model", "registered_model", "registry_version", "champion_version", "checkpoint_sha256")


@dataclass(frozen=True)
class StoreModel:
    """A facelandmarks checkpoint in the BentoML model store.

    Attributes:
        tag: ``facelandmarks:<version>``.
        checkpoint: path of ``model.pt`` inside the store entry.
        checkpoint_sha256: sha256 (64 hex) of that file, from the entry's labels.
        registry: ``(name, version)`` of the MLflow model version it was imported from; None for a checkpoint
            imported from a file.
        model_uri: ``models:/NAME/VERSION`` or the checkpoint path it was imported from.
        labels: the entry's labels.
        reused: True when :func:`import_model` found the entry already in the store.
    """

    tag: str
    checkpoint: Path
    checkpoint_sha256: str
    registry: tuple[str, str] | None
    model_uri: str
    labels: dict[str, str]
    reused: bool = False


def model_source(model_uri: str, registry: tuple[str, str] | None = None) -> str:
    """Where a model is loaded from, in words (the service's ``/info`` ``source``).

    Returns:
        ``mlflow models:/NAME/VERSION`` for a registry version, ``mlflow <uri>`` for other MLflow URIs
        (``runs:/``, ``s3://``), ``checkpoint <path>`` for a local file or folder.
    """
    if registry is not None:
        return f"mlflow models:/{registry[0]}/{registry[1]}"
    if model_uri.startswith(("models:/", "runs:/")) or "://" in model_uri:
        return f"mlflow {model_uri}"
    return f"checkpoint {model_uri}"


def store_tag(checkpoint_sha256: str, registry: tuple[str, str] | None, name: str = MODEL_NAME) -> str:
    """The store tag of a checkpoint: ``NAME:r<version>-<16 hex>`` (registry) or ``NAME:sha-<16 hex>``."""
    digest = checkpoint_sha256[:16].lower()
    return f"{name}:r{registry[1]}-{digest}" if registry else f"{name}:sha-{digest}"


def _alias_of(model_uri: str) -> str | None:
    """``champion`` of ``models:/NAME@champion``; None for any other URI."""
    if model_uri.startswith("models:/") and "@" in model_uri:
        return model_uri.rsplit("@", 1)[1].strip("/") or None
    return None


def read_store_model(stored: Any, reused: bool = False) -> StoreModel:
    """A :class:`StoreModel` of a BentoML store entry (``bentoml.models.get(tag)`` or a resolved ``BentoModel``).

    Raises:
        ValueError: the entry is no facelandmarks checkpoint (no ``model.pt`` or no ``checkpoint_sha256`` label);
            the message names the tag.
    """
    labels = {str(k): str(v) for k, v in (stored.info.labels or {}).items()}
    checkpoint = Path(stored.path_of(CHECKPOINT_FILE))
    if not checkpoint.is_file() or "checkpoint_sha256" not in labels:
        raise ValueError(f"BentoML model {stored.tag}: not a facelandmarks checkpoint entry (needs {CHECKPOINT_FILE} "
                         "and a checkpoint_sha256 label; import one with `facelandmarks bento --import-only`)")
    name, version = labels.get("registry_name"), labels.get("registry_version")
    registry = (name, version) if name and version else None
    meta = stored.info.metadata or {}
    return StoreModel(tag=str(stored.tag), checkpoint=checkpoint, checkpoint_sha256=labels["checkpoint_sha256"],
                      registry=registry, model_uri=str(meta.get("model_uri", "")), labels=labels, reused=reused)


def import_model(model_uri: str, tracking_uri: str | None = None, name: str = MODEL_NAME) -> StoreModel:
    """Put the checkpoint ``model_uri`` points at into the BentoML model store, or find it there.

    ``models:/NAME@ALIAS`` is resolved to one version first (:func:`facelandmarks.serving.config.registry_version`)
    and that version's checkpoint is downloaded, so the entry is exactly one registry version. An entry with the
    same tag (same registry version, same checkpoint sha256) is reused, after checking that its file has that hash.

    Args:
        model_uri: ``models:/facelandmarks@champion``, ``models:/facelandmarks/3``, ``runs:/...`` or a checkpoint
            path (see :mod:`facelandmarks.inference.source`).
        tracking_uri: MLflow tracking and registry URI (MLflow's default when None).
        name: the store model's name.
    Returns:
        the entry; ``reused`` says whether it was in the store already.
    Raises:
        facelandmarks.inference.source.ModelSourceError: the URI leads to no checkpoint (unknown alias, missing
            file, MLflow unreachable).
        facelandmarks.model.checkpoint.CheckpointError: the file is no readable facelandmarks checkpoint.
        ValueError: a store entry with this tag holds another file (the message names both hashes).
    """
    import bentoml
    from bentoml.exceptions import NotFound

    from facelandmarks.inference.source import ModelSourceError, local_checkpoint
    from facelandmarks.model.checkpoint import read_checkpoint
    from facelandmarks.registry.models import sha256_file
    from facelandmarks.serving.config import registry_version

    try:
        registry = registry_version(model_uri, tracking_uri)
    except Exception as e:  # MlflowException: unknown model or alias, unreachable store
        raise ModelSourceError(f"{model_uri}: not found in the MLflow registry at {tracking_uri or 'MLflow default'}: "
                               f"{e}") from e
    pinned = f"models:/{registry[0]}/{registry[1]}" if registry else os.fspath(model_uri)
    with local_checkpoint(pinned, tracking_uri) as path:
        digest = sha256_file(path)
        tag = store_tag(digest, registry, name)
        try:
            found = read_store_model(bentoml.models.get(tag), reused=True)
        except NotFound:
            found = None
        if found is not None:
            have = sha256_file(found.checkpoint)
            if have != digest:
                raise ValueError(f"BentoML model {tag}: its {CHECKPOINT_FILE} has sha256 {have}, expected {digest} "
                                 f"(from {pinned}); delete it with `bentoml models delete {tag}` and import again")
            return found
        config = read_checkpoint(path)["config"]  # torch.load(weights_only=True); raises CheckpointError
        labels = {"checkpoint_sha256": digest, "backbone": str(config.get("backbone", "")),
                  "head": str(config.get("head", "")), "scheme": str(config.get("scheme", "")),
                  "input_size": str(config.get("input_size", ""))}
        if registry:
            labels.update(registry_name=registry[0], registry_version=registry[1])
        metadata = {"model_uri": pinned if registry else str(Path(path).resolve()), "requested_uri": str(model_uri),
                    "tracking_uri": str(tracking_uri or ""), "checkpoint_bytes": Path(path).stat().st_size,
                    "model_config": json.dumps(config, sort_keys=True, default=str)}
        with bentoml.models.create(tag, labels=labels, metadata=metadata) as entry:
            shutil.copyfile(path, entry.path_of(CHECKPOINT_FILE))
    return read_store_model(bentoml.models.get(tag), reused=False)


def bento_labels(model: StoreModel, requested_uri: str | None = None) -> dict[str, str]:
    """The labels a Bento serving ``model`` carries, all read from the model itself.

    Returns:
        ``model`` (its store tag), ``checkpoint_sha256``; for a registry version ``registered_model`` and
        ``registry_version``, and ``<alias>_version`` (``champion_version``) when ``requested_uri`` named the
        version through an alias (``models:/facelandmarks@champion``).
    """
    labels = {"model": model.tag, "checkpoint_sha256": model.checkpoint_sha256}
    if model.registry:
        labels.update(registered_model=model.registry[0], registry_version=model.registry[1])
        alias = _alias_of(requested_uri or "")
        if alias:
            labels[f"{alias}_version"] = model.registry[1]
    return labels
