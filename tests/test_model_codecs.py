"""The heatmap codec: Gaussian encoding and soft-argmax decoding round-trip, apart from the network."""

from __future__ import annotations

import pytest
import torch

from facelandmarks.model.codecs import CODECS, SoftArgmaxCodec
from facelandmarks.model.heads import HEADS, HeatmapHead, RegressionHead
from facelandmarks.model.losses import LOSSES, landmark_loss


@pytest.mark.parametrize("stride", [4, 8])
def test_encode_then_decode_returns_the_points(landmark_crops, stride):
    # real 68-point HELEN landmarks, scaled from their 64 px crops to 128 px
    codec = SoftArgmaxCodec(stride, sigma=1.0)
    pts = torch.from_numpy(landmark_crops.landmarks[:8]) * 2 + 0.5
    size = (128 // stride, 128 // stride)
    maps = codec.encode(pts, size)
    assert maps.shape == (8, 68, *size)
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(8, 68))
    out = codec.decode(torch.log(maps.clamp_min(1e-30)))
    torch.testing.assert_close(out["heatmaps"], maps, atol=1e-5, rtol=1e-4)
    # exact (sub-cell) where the Gaussian is not cut by the map border (3 sigma inside); soft-argmax is biased
    # towards the centre for points nearer the border, a known property of integral regression
    cells = codec.to_cells(pts)
    inside = ((cells >= 3) & (cells <= torch.tensor(size[::-1]) - 4)).all(dim=-1)
    assert inside.sum() > 100
    err = (out["coords"] - pts).abs().amax(dim=-1)[inside].max().item()
    assert err < 0.05 * stride, err  # a twentieth of a cell


def test_cells_and_pixels_are_inverse_and_follow_the_pixel_convention():
    codec = SoftArgmaxCodec(8)
    assert codec.to_pixels(torch.tensor([0.0])).item() == 3.5  # cell 0 covers pixels -0.5 .. 7.5
    p = torch.tensor([[10.25, 60.0]])
    torch.testing.assert_close(codec.to_pixels(codec.to_cells(p)), p)
    with pytest.raises(ValueError):
        SoftArgmaxCodec(0)


def test_name_tables_name_the_classes_the_params_accept():
    assert HEADS == {"regression": RegressionHead, "heatmap": HeatmapHead}
    assert CODECS["soft_argmax"] is SoftArgmaxCodec
    d = torch.tensor([[[1.0, -2.0]]])
    assert set(LOSSES) == {"l1", "l2", "wing", "awing"}
    for name in LOSSES:
        assert landmark_loss(d, torch.zeros_like(d), kind=name).item() > 0
