"""Checkpoints: the best model of a stage (``models/<stage>/model.pt``) and its resumable state (``last.pt``).

``model.pt`` holds ``{"format": 1, "config": ModelConfig as dict, "state_dict": ..., "meta": {...}}``: enough to
rebuild the network without params.yaml (:func:`load_checkpoint`). ``last.pt`` adds the optimiser, LR
scheduler, epoch, early-stopping and random-generator states so an interrupted run continues where it stopped
(:mod:`facelandmarks.train.loop`). Both are written atomically.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from facelandmarks.fsutil import atomic_path
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.network import LandmarkModel, build_model

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint", "write_torch"]

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a facelandmarks model; the message names the file."""


def _state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # a compiled or channels-last model still saves plain contiguous CPU tensors
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def write_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically, the same bytes for the same object.

    ``torch.save`` to a file path names the folder inside its zip archive after the file, and an atomic
    write saves under a random temporary name (:func:`facelandmarks.fsutil.atomic_path`): the same weights
    then got other bytes, so another checkpoint sha256, in every run (found by comparing a fresh clone's
    ``dvc repro`` with the committed one: bit-identical tensors, different files). Saved through memory the
    folder is always ``archive``.

    Args:
        path: destination file.
        obj: what ``torch.save`` takes (tensors and plain containers, for ``weights_only`` loading).
    Raises:
        OSError: the folder is missing or not writable (nothing is left at ``path`` or beside it).
        pickle.PicklingError, TypeError: ``obj`` holds something ``torch.save`` cannot store.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


def save_checkpoint(path: str | os.PathLike, model: LandmarkModel, meta: dict[str, Any] | None = None,
                    **extra: Any) -> None:
    """Write a model checkpoint atomically; the same model and meta give the same bytes (:func:`write_torch`).

    Args:
        path: destination (``models/<stage>/model.pt`` or ``last.pt``).
        model: the network; its ``config`` is stored with the weights.
        meta: small JSON-able facts (stage, epoch, validation NME, ...).
        extra: further entries (``optimizer``, ``scheduler``, ``epoch``, ``rng`` ... for ``last.pt``).
    """
    blob = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config.model_dump(),
        "state_dict": _state_dict(model),
        "meta": dict(meta or {}),
        **extra,
    }
    write_torch(path, blob)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint's raw dictionary.

    Loaded with ``torch.load(..., weights_only=True)``: only tensors and plain containers are unpickled, never
    code, so a tampered file cannot run anything; it fails with a :class:`CheckpointError`.

    Raises:
        CheckpointError: missing, unreadable or tampered with (holds objects other than tensors and plain
            data), or not written by :func:`save_checkpoint`.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found (run `dvc repro` to train it)")
    try:
        blob = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or tampered files
        raise CheckpointError(
            f"{p}: not a readable checkpoint: corrupt, or it holds objects other than tensors and plain data "
            f"(refused by torch.load(weights_only=True)) ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
        ) from e
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT or "config" not in blob:
        raise CheckpointError(f"{p}: not a facelandmarks checkpoint of format {CHECKPOINT_FORMAT}")
    return blob


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[LandmarkModel, ModelConfig]:
    """Rebuild a trained network.

    Args:
        path: ``models/<stage>/model.pt``.
        map_location: device for the weights (``"cpu"``, ``"cuda"``).
    Returns:
        ``(model, config)``; the model is in eval mode on ``map_location``; ``model(x)`` maps ``(B, 3, S, S)``
        from :func:`facelandmarks.model.preprocess.to_tensor` to ``(B, K, 2)`` crop pixels, with
        ``S = config.input_size``. ``config.crop`` holds the crop params the model was trained with.
        Pretrained weights are never downloaded here (the checkpoint has all weights).
    Raises:
        CheckpointError: bad file, or weights that do not fit the stored config.
    """
    blob = read_checkpoint(path, map_location)
    config = ModelConfig.model_validate({**blob["config"], "pretrained": False})
    model = build_model(config)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the stored config: {e}") from e
    stored = ModelConfig.model_validate(blob["config"])
    model.config = stored
    return model.to(map_location).eval(), stored
