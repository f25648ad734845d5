"""Heatmap codecs: target encoding and prediction decoding, apart from the network (mmpose's "codec").

A head produces ``(B, K, H, W)`` heatmap logits at a ``stride`` (input pixels per cell); a codec turns them into
``(B, K, 2)`` landmarks in crop pixels (:meth:`SoftArgmaxCodec.decode`) and turns landmarks into heatmap
targets for heatmap supervision (:meth:`SoftArgmaxCodec.encode`). Swapping the decoder (e.g. heatmap + offset
as in PIPNet) means adding a codec here, not touching the heads.

Pixel convention: pixel centres at integers, 0-based. A heatmap cell ``u`` at stride ``s`` covers input pixels
``[u*s - 0.5, (u+1)*s - 0.5)``; its centre is the input pixel ``u*s + (s-1)/2``.
"""

from __future__ import annotations

import torch

__all__ = ["soft_argmax", "SoftArgmaxCodec", "CODECS"]


def soft_argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integral regression: the expected position under a spatial softmax (Sun et al., "Integral Human Pose
    Regression", ECCV 2018; Nibali et al., "DSNT", 2018).

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


class SoftArgmaxCodec:
    """Soft-argmax decoding of heatmap logits and Gaussian heatmap targets, at one stride.

    Args:
        stride: input pixels per heatmap cell (4 or 8).
        sigma: standard deviation of the target Gaussian, in heatmap cells (encoding only).
    """

    def __init__(self, stride: int, sigma: float = 1.0):
        if stride < 1 or sigma <= 0:
            raise ValueError(f"stride must be >= 1 and sigma > 0, got stride={stride}, sigma={sigma}")
        self.stride = stride
        self.sigma = sigma

    def to_cells(self, coords: torch.Tensor) -> torch.Tensor:
        """Crop pixels -> heatmap cells: ``(p - (s-1)/2) / s``; any shape ending in 2."""
        return (coords - (self.stride - 1) / 2.0) / self.stride

    def to_pixels(self, cells: torch.Tensor) -> torch.Tensor:
        """Heatmap cells -> crop pixels: ``u*s + (s-1)/2``."""
        return cells * self.stride + (self.stride - 1) / 2.0

    def decode(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, K, H, W)`` logits -> ``{"coords": (B, K, 2) float32 crop pixels, "heatmaps": (B, K, H, W)}``
        (the softmax)."""
        cells, prob = soft_argmax(logits)
        return {"coords": self.to_pixels(cells), "heatmaps": prob}

    def encode(self, coords: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Gaussian heatmap targets.

        Args:
            coords: ``(B, K, 2)`` landmarks in crop pixels.
            size: heatmap ``(H, W)`` in cells (input size / stride).
        Returns:
            ``(B, K, H, W)`` float32, each map a Gaussian of ``sigma`` cells centred on the point and normalised
            to sum 1 (a probability map, the target of the softmax; points far outside the map give a map of
            zeros).
        """
        h, w = size
        cells = self.to_cells(coords.float())
        ys = torch.arange(h, dtype=torch.float32, device=coords.device).view(1, 1, h, 1)
        xs = torch.arange(w, dtype=torch.float32, device=coords.device).view(1, 1, 1, w)
        d2 = (xs - cells[..., 0, None, None]) ** 2 + (ys - cells[..., 1, None, None]) ** 2
        g = torch.exp(-d2 / (2.0 * self.sigma**2))
        return g / g.sum(dim=(2, 3), keepdim=True).clamp_min(1e-12)


CODECS: dict[str, type[SoftArgmaxCodec]] = {"soft_argmax": SoftArgmaxCodec}
"""Codec name -> class (timm-style registry)."""
