"""Landmark heads: from backbone feature maps to ``(B, K, 2)`` landmarks in input (crop) pixels.

Two heads with comparable parameter counts:

* :class:`RegressionHead`: direct coordinate regression (global average pooling + MLP -> 2K values).
* :class:`HeatmapHead`: a small top-down feature pyramid (lateral 1x1 convolutions, upsample and add, as in
  FPN, Lin et al. CVPR 2017) down to stride 4 or 8, one heatmap per point, decoded with a spatial softmax and
  its expectation (soft-argmax / integral regression, Sun et al. "Integral Human Pose Regression", ECCV 2018;
  Nibali et al. "DSNT", 2018). The decoding is differentiable and sub-pixel, so the head trains with any
  coordinate loss.

Pixel convention: pixel centres at integers, 0-based. A heatmap cell ``u`` at stride ``s`` covers input
pixels ``[u*s - 0.5, (u+1)*s - 0.5)``; its centre is ``u*s + (s-1)/2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["soft_argmax", "RegressionHead", "HeatmapHead"]


def soft_argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integral regression: the expected position under a spatial softmax.

    Args:
        logits: ``(B, K, H, W)`` unnormalised heatmaps.
    Returns:
        ``(coords, prob)``: ``coords`` ``(B, K, 2)`` float32 (x, y) in heatmap cells (cell centres at
        integers, so a peak exactly on cell (3, 5) gives (3.0, 5.0)); ``prob`` ``(B, K, H, W)`` the softmax.
    """
    b, k, h, w = logits.shape
    prob = torch.softmax(logits.float().reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
    xs = torch.arange(w, dtype=prob.dtype, device=prob.device)
    ys = torch.arange(h, dtype=prob.dtype, device=prob.device)
    x = (prob.sum(dim=2) * xs).sum(dim=-1)
    y = (prob.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1), prob


def _conv_bn_act(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class RegressionHead(nn.Module):
    """Direct coordinate regression: GAP over the deepest feature map, then a 2-layer MLP.

    Outputs are offsets from the crop centre in units of the crop side, so a zero-initialised last layer
    starts every point at the centre.

    Args:
        in_channels: channels of the deepest backbone feature map.
        num_points: K.
        input_size: crop side S in pixels.
        hidden: width of the hidden layer.
        dropout: dropout before the last layer.
    """

    def __init__(self, in_channels: int, num_points: int, input_size: int, hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        self.num_points = num_points
        self.input_size = input_size
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 2 * num_points),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Args: ``features`` backbone maps, shallow to deep. Returns ``{"coords": (B, K, 2)}`` crop pixels."""
        x = features[-1].float().mean(dim=(2, 3))
        offset = self.mlp(x).float().reshape(-1, self.num_points, 2)
        coords = (offset + 0.5) * (self.input_size - 1)
        return {"coords": coords}


class HeatmapHead(nn.Module):
    """Heatmaps at ``stride`` from a top-down feature pyramid, decoded by soft-argmax.

    Args:
        in_channels: channels of the backbone maps used, shallow to deep (first one at ``stride``).
        reductions: their strides, e.g. ``[8, 16, 32]``.
        num_points: K.
        channels: pyramid width C.
        stride: heatmap stride (the first reduction).
    """

    def __init__(self, in_channels: list[int], reductions: list[int], num_points: int, channels: int = 64,
                 stride: int = 8):
        super().__init__()
        if reductions[0] != stride:
            raise ValueError(f"heatmap stride {stride} needs a backbone map at that stride, got {reductions}")
        self.stride = stride
        self.lateral = nn.ModuleList(_conv_bn_act(c, channels) for c in in_channels)
        self.refine = nn.Sequential(
            _conv_bn_act(channels, channels, 3, groups=channels),
            _conv_bn_act(channels, channels),
            _conv_bn_act(channels, channels, 3, groups=channels),
            _conv_bn_act(channels, channels),
        )
        self.out = nn.Conv2d(channels, num_points, 1)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Args: ``features`` backbone maps, shallow to deep.

        Returns:
            ``{"coords": (B, K, 2) crop pixels, "heatmaps": (B, K, H, W) softmax probabilities}``.
        """
        x = self.lateral[-1](features[-1])
        for feat, lat in zip(reversed(features[:-1]), reversed(self.lateral[:-1])):
            y = lat(feat)
            x = y + F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.out(self.refine(x))
        cells, prob = soft_argmax(logits)
        coords = cells * self.stride + (self.stride - 1) / 2.0
        return {"coords": coords, "heatmaps": prob}
