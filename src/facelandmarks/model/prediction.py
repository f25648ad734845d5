"""Batched prediction on crops: the network on ready crops (training validation, evaluation and serving share it)."""

from __future__ import annotations

import numpy as np
import torch

from facelandmarks.model.preprocess import to_tensor

__all__ = ["predict_crops"]


@torch.no_grad()
def predict_crops(
    model: torch.nn.Module, crops: np.ndarray, batch_size: int = 128, device: str | torch.device | None = None
) -> np.ndarray:
    """Landmarks of many crops.

    Args:
        model: a landmark network (``(B, 3, S, S)`` -> ``(B, K, 2)``); switched to eval mode.
        crops: ``(N, S, S, 3) uint8`` RGB crops of the model's input size.
        batch_size: crops per forward pass.
        device: where to run; default: where the model's parameters are.
    Returns:
        ``(N, K, 2) float32`` landmarks in crop pixels.
    """
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    out = []
    for i in range(0, len(crops), batch_size):
        x = to_tensor(crops[i : i + batch_size]).to(device)
        if device is not None and torch.device(device).type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(model(x).float().cpu().numpy())
    if not out:
        return np.zeros((0, getattr(getattr(model, "config", None), "num_points", 0), 2), np.float32)
    return np.concatenate(out).astype(np.float32)
