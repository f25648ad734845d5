"""Transfer learning: start from a pretrained checkpoint, re-initialise the head, freeze early stages, and
ensemble the finetuned weights with the pretrained ones (WiSE-FT)."""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from facelandmarks.model.checkpoint import CheckpointError, read_checkpoint
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.network import LandmarkModel

__all__ = [
    "load_pretrained",
    "freeze_backbone_stages",
    "frozen_modules_eval",
    "split_parameters",
    "interpolate_weights",
    "choose_alpha",
]

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


def interpolate_weights(pretrained: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor],
                        alpha: float) -> dict[str, torch.Tensor]:
    """Weight-space ensemble of a finetuned model with its pretrained start (WiSE-FT, Wortsman et al., "Robust
    fine-tuning of zero-shot models", CVPR 2022): ``(1 - alpha) * pretrained + alpha * finetuned``.

    Floating-point tensors (weights, batch-norm running statistics) are interpolated; integer buffers
    (``num_batches_tracked``) are taken from ``finetuned``. ``alpha = 1`` gives the finetuned weights exactly,
    ``alpha = 0`` the pretrained ones.

    Args:
        pretrained, finetuned: state dicts of the same architecture (same keys and shapes).
        alpha: weight of the finetuned model, in [0, 1].
    Returns:
        a new state dict (CPU tensors of ``finetuned``'s dtypes).
    Raises:
        ValueError: alpha outside [0, 1], or the two state dicts differ in keys or shapes (names them).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"WiSE-FT alpha must be in [0, 1], got {alpha}")
    if pretrained.keys() != finetuned.keys():
        diff = sorted(set(pretrained) ^ set(finetuned))
        raise ValueError(f"pretrained and finetuned weights have different tensors: {diff[:5]}")
    out = {}
    for k, ft in finetuned.items():
        pre = pretrained[k]
        if pre.shape != ft.shape:
            raise ValueError(f"{k}: pretrained shape {tuple(pre.shape)} != finetuned {tuple(ft.shape)}")
        ft = ft.detach().cpu()
        if ft.is_floating_point():
            out[k] = torch.lerp(pre.detach().cpu().to(ft.dtype), ft, float(alpha))
        else:
            out[k] = ft.clone()
    return out


def choose_alpha(target_nme: dict[float, float], guard_nme: dict[float, dict[str, float]],
                 guard_limit: dict[str, float]) -> float:
    """The WiSE-FT mixing weight to keep: the lowest validation NME on the finetuning data set among the alphas
    that keep every guarded data set within its limit; when none does, the alpha that exceeds the limits least.

    Args:
        target_nme: alpha -> validation NME on the finetuning data set (InfAnFace val), lower is better.
        guard_nme: alpha -> {data set -> validation NME} of the mixed data sets (300-W val).
        guard_limit: data set -> the highest NME allowed (the pretrained model's val NME + the allowed
            forgetting).
    Returns:
        one of ``target_nme``'s alphas; ties go to the larger alpha (closer to the trained weights).
    Raises:
        ValueError: no alpha given.
    """
    if not target_nme:
        raise ValueError("no WiSE-FT alpha to choose from")

    def excess(a: float) -> float:
        return max([0.0] + [guard_nme[a][name] - limit for name, limit in guard_limit.items()])

    passing = [a for a in target_nme if excess(a) <= 0.0]
    if passing:
        return min(passing, key=lambda a: (target_nme[a], -a))
    return min(target_nme, key=lambda a: (excess(a), target_nme[a], -a))
