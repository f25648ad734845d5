"""Landmark heads: from backbone feature maps to ``(B, K, 2)`` landmarks in input (crop) pixels.

Two heads with comparable parameter counts:

* :class:`RegressionHead`: direct coordinate regression (global average pooling + MLP -> 2K values).
* :class:`HeatmapHead`: a small top-down feature pyramid (lateral 1x1 convolutions, upsample and add, as in
  FPN, Lin et al. CVPR 2017) down to stride 4 or 8, one heatmap per point, decoded with a spatial softmax and
  its expectation (soft-argmax / integral regression, Sun et al. "Integral Human Pose Regression", ECCV 2018;
  Nibali et al. "DSNT", 2018). The decoding is differentiable and sub-pixel, so the head trains with any
  coordinate loss.

Heatmap decoding lives in :mod:`facelandmarks.model.codecs` (the codec), apart from the network. Pixel
convention: pixel centres at integers, 0-based (see the codecs module). :data:`HEADS` maps a ``model.head``
name to its class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facelandmarks.model.codecs import SoftArgmaxCodec, soft_argmax
from facelandmarks.model.config import ModelConfig

__all__ = ["soft_argmax", "RegressionHead", "HeatmapHead", "HEADS"]


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

    @staticmethod
    def feature_indices(reductions: list[int], config: ModelConfig) -> tuple[int, ...]:
        """Backbone maps the head reads (indices into the backbone's ``feature_info``): the deepest."""
        return (len(reductions) - 1,)

    @classmethod
    def from_config(cls, channels: list[int], reductions: list[int], config: ModelConfig) -> "RegressionHead":
        """The head for backbone maps of ``channels`` / ``reductions`` (those of :meth:`feature_indices`)."""
        return cls(channels[-1], config.num_points, config.input_size, hidden=4 * config.head_channels,
                   dropout=config.dropout)

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
        self.codec = SoftArgmaxCodec(stride)

    @staticmethod
    def feature_indices(reductions: list[int], config: ModelConfig) -> tuple[int, ...]:
        """Backbone maps the pyramid reads: every one at ``config.heatmap_stride`` or deeper.

        Raises:
            ValueError: the backbone has no map at that stride.
        """
        if config.heatmap_stride not in reductions:
            raise ValueError(f"backbone {config.backbone!r} has no feature map at stride {config.heatmap_stride}")
        return tuple(i for i, r in enumerate(reductions) if r >= config.heatmap_stride)

    @classmethod
    def from_config(cls, channels: list[int], reductions: list[int], config: ModelConfig) -> "HeatmapHead":
        """The head for backbone maps of ``channels`` / ``reductions`` (those of :meth:`feature_indices`)."""
        return cls(channels, reductions, config.num_points, config.head_channels, config.heatmap_stride)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Args: ``features`` backbone maps, shallow to deep.

        Returns:
            ``{"coords": (B, K, 2) crop pixels, "heatmaps": (B, K, H, W) softmax probabilities}``.
        """
        x = self.lateral[-1](features[-1])
        for feat, lat in zip(reversed(features[:-1]), reversed(self.lateral[:-1])):
            y = lat(feat)
            x = y + F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False)
        return self.codec.decode(self.out(self.refine(x)))


HEADS: dict[str, type[RegressionHead] | type[HeatmapHead]] = {"regression": RegressionHead, "heatmap": HeatmapHead}
"""``model.head`` name -> head class (timm-style registry). A head class has ``feature_indices(reductions,
config)`` (which backbone maps it reads) and ``from_config(channels, reductions, config)``; adding a head is
one class plus one entry here (and its name in :class:`~facelandmarks.model.config.ModelConfig`)."""
