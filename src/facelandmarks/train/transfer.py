"""Transfer learning: start from a pretrained checkpoint, re-initialise the head, freeze early stages."""

from __future__ import annotations

import logging
import os

from torch import nn

from facelandmarks.model.checkpoint import CheckpointError, read_checkpoint
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.network import LandmarkModel

__all__ = ["load_pretrained", "freeze_backbone_stages", "frozen_modules_eval", "split_parameters"]

log = logging.getLogger(__name__)

_ARCH_KEYS = ("backbone", "head", "head_channels", "heatmap_stride")


def load_pretrained(model: LandmarkModel, path: str | os.PathLike, reinit_head: str = "auto") -> bool:
    """Copy a pretrained checkpoint's weights into ``model``.

    The backbone is always copied. The head is copied unless the point scheme (or number of points) differs
    from the checkpoint's (``reinit_head="auto"``), or ``reinit_head="always"``; then it keeps its fresh
    initialisation.

    Args:
        model: a freshly built network.
        path: ``models/pretrain/model.pt``.
        reinit_head: ``auto``, ``always`` or ``never``.
    Returns:
        True when the head was re-initialised.
    Raises:
        CheckpointError: unreadable file, another architecture (names the differing keys), or
            ``reinit_head="never"`` with a different scheme.
    """
    blob = read_checkpoint(path)
    source = ModelConfig.model_validate(blob["config"])
    differ = [k for k in _ARCH_KEYS if getattr(source, k) != getattr(model.config, k)]
    if differ:
        raise CheckpointError(
            f"{path}: pretrained with another architecture ({', '.join(f'{k}={getattr(source, k)!r}' for k in differ)}"
            f"); re-run the pretrain stage"
        )
    same_points = source.scheme == model.config.scheme and source.num_points == model.config.num_points
    if reinit_head == "never" and not same_points:
        raise CheckpointError(
            f"{path}: scheme {source.scheme!r} ({source.num_points} points) differs from {model.config.scheme!r} "
            f"({model.config.num_points} points) and finetune.reinit_head is 'never'"
        )
    reinit = reinit_head == "always" or not same_points
    state = blob["state_dict"]
    if reinit:
        state = {k: v for k, v in state.items() if k.startswith("backbone.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(k.startswith("backbone.") for k in missing):
            raise CheckpointError(f"{path}: backbone weights do not fit ({unexpected or missing})")
        log.info("loaded the backbone of %s; head re-initialised", path)
    else:
        model.load_state_dict(state)
        log.info("loaded backbone and head of %s", path)
    return reinit


def _norm(name: str) -> str:
    return name.replace(".", "_")


def freeze_backbone_stages(model: LandmarkModel, n: int) -> list[str]:
    """Freeze the stem and the first ``n`` feature stages of the backbone (``requires_grad = False``).

    Stages are timm's feature levels (``feature_info``): level 0 is the stride-2 stem for most backbones.
    Parameters are frozen in registration order up to and including the module of level ``n - 1``.

    Args:
        model: the network.
        n: number of feature levels to freeze (0: none; more than the backbone has: the whole backbone).
    Returns:
        Names of the frozen parameters.
    """
    if n <= 0:
        return []
    info = model.backbone.feature_info.info
    boundary = _norm(info[min(n, len(info)) - 1]["module"])
    frozen, inside = [], False
    for name, p in model.backbone.named_parameters():
        here = _norm(name).startswith(boundary + "_")
        if inside and not here:
            break
        inside = inside or here
        p.requires_grad_(False)
        frozen.append(name)
    if n >= len(info):  # everything up to the last level: freeze the whole backbone
        for name, p in model.backbone.named_parameters():
            if p.requires_grad:
                p.requires_grad_(False)
                frozen.append(name)
    return frozen


def frozen_modules_eval(model: LandmarkModel, all_batchnorm: bool = False) -> None:
    """Train mode, except backbone batch-norm layers whose parameters are all frozen, or every backbone
    batch-norm layer with ``all_batchnorm``: their running statistics stay the pretrained ones (their scale
    and shift still train unless frozen). Finetuning on a small second domain otherwise moves the statistics
    toward a mix of both domains, which costs the first domain accuracy."""
    model.train()
    for m in model.backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if all_batchnorm or (params and not any(p.requires_grad for p in params)):
                m.eval()


def split_parameters(model: LandmarkModel) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable ``(backbone, head)`` parameters, for separate learning rates."""
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    head = [p for p in model.head.parameters() if p.requires_grad]
    return backbone, head
