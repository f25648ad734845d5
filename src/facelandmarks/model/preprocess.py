"""Model input: ``uint8`` RGB crops -> float tensors normalised with the ImageNet mean and std.

The same function serves training, evaluation and serving, so their inputs never differ. Its output is always
normalised with the ImageNet statistics (``timm.data.IMAGENET_DEFAULT_MEAN`` / ``_STD``): that is the fixed
input contract of every :class:`~facelandmarks.model.network.LandmarkModel`. Backbones whose weights expect
another normalisation (EfficientNet-Lite0: mean = std = 0.5) convert inside the network
(:func:`renormalisation`, from ``ModelConfig.input_mean`` / ``input_std``), so a checkpoint carries its own
normalisation and no caller can feed it the wrong one.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MEAN", "STD", "to_tensor", "normalize", "renormalisation"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def renormalisation(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-channel ``(scale, shift)`` ``(1, 3, 1, 1)`` float32 mapping ImageNet-normalised input to ``mean``/``std``.

    ``x_raw = x * STD + MEAN`` and ``x' = (x_raw - mean) / std``, so ``x' = x * STD/std + (MEAN - mean)/std``.
    Returns None when ``mean``/``std`` are the ImageNet statistics (nothing to do).
    """
    if tuple(mean) == MEAN and tuple(std) == STD:
        return None
    m, s = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    scale = torch.tensor(STD, dtype=torch.float32) / s
    shift = (torch.tensor(MEAN, dtype=torch.float32) - m) / s
    return scale.view(1, 3, 1, 1), shift.view(1, 3, 1, 1)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` float in [0, 255] -> ``(x/255 - MEAN) / STD`` float32."""
    mean = torch.tensor(MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
    return (x.float() - mean) / std


def to_tensor(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Crops to model input.

    Args:
        crops: ``(B, S, S, 3)`` uint8 RGB (a single ``(S, S, 3)`` crop is treated as a batch of 1).
    Returns:
        ``(B, 3, S, S)`` float32, normalised.
    Raises:
        ValueError: not uint8, or not 3 channels last.
    """
    t = torch.as_tensor(np.ascontiguousarray(crops)) if isinstance(crops, np.ndarray) else crops
    if t.dtype != torch.uint8:
        raise ValueError(f"crops must be uint8 RGB, got {t.dtype}")
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"crops must be (B, S, S, 3) RGB, got shape {tuple(t.shape)}")
    return normalize(t.permute(0, 3, 1, 2))
