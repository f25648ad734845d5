"""Heads, network, preprocessing and checkpoints of the landmark model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facelandmarks.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.heads import soft_argmax
from facelandmarks.model.network import build_model, count_parameters
from facelandmarks.model.preprocess import to_tensor


@pytest.mark.parametrize("centre", [(3.3, 5.75), (7.5, 8.0), (10.02, 4.61)])
def test_soft_argmax_decodes_a_gaussian_peak_to_sub_pixel_accuracy(centre):
    h, w = 16, 16
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    sigma = 1.5
    logits = -((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2)  # log of a Gaussian
    coords, prob = soft_argmax(logits[None, None].float())
    assert coords.shape == (1, 1, 2)
    assert prob.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert abs(coords[0, 0, 0].item() - centre[0]) < 0.05
    assert abs(coords[0, 0, 1].item() - centre[1]) < 0.05


@pytest.mark.parametrize("head", ["regression", "heatmap"])
@pytest.mark.parametrize("scheme", ["ibug68", "mtcnn5"])
def test_both_heads_give_B_K_2_crop_pixels(head, scheme):
    num_points = 68 if scheme == "ibug68" else 5
    cfg = ModelConfig(backbone="mobilenetv3_small_050", head=head, num_points=num_points, scheme=scheme,
                      input_size=64, head_channels=32)
    model = build_model(cfg).eval()
    x = to_tensor(np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, num_points, 2) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # a fresh model puts points inside the crop (heatmap: expectation over cells; regression: the centre)
    assert (out >= -0.5).all() and (out <= 63.5).all()


def test_heads_have_comparable_parameter_counts():
    counts = {h: count_parameters(build_model(ModelConfig(backbone="mobilenetv3_small_100", head=h)))
              for h in ("regression", "heatmap")}
    assert 0.5 < counts["regression"] / counts["heatmap"] < 2.0


def test_heatmap_stride_4_gives_a_finer_map():
    model = build_model(ModelConfig(backbone="mobilenetv3_small_050", heatmap_stride=4, input_size=64)).eval()
    with torch.no_grad():
        out = model.forward_train(torch.zeros(1, 3, 64, 64))
    assert out["heatmaps"].shape == (1, 68, 16, 16)


def test_to_tensor_normalises_rgb_uint8_and_refuses_other_input():
    crops = np.zeros((2, 8, 8, 3), np.uint8)
    crops[..., 0] = 255
    x = to_tensor(crops)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert x[:, 0].mean().item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    assert x[:, 1].mean().item() == pytest.approx((0 - 0.456) / 0.224, rel=1e-5)
    assert to_tensor(crops[0]).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(crops.astype(np.float32))
    with pytest.raises(ValueError, match="RGB"):
        to_tensor(np.zeros((2, 8, 8), np.uint8))


def test_checkpoint_round_trip_and_errors(tmp_path):
    cfg = ModelConfig(backbone="mobilenetv3_small_050", input_size=64, crop={"size": 64, "scale": 1.4})
    model = build_model(cfg).eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, {"stage": "test"})
    loaded, loaded_cfg = load_checkpoint(path)
    assert loaded_cfg == cfg and loaded_cfg.crop["scale"] == 1.4
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)


def test_same_model_gives_the_same_checkpoint_bytes(tmp_path):
    """The checkpoint sha256 is the model's identity (registry, Bento labels, ONNX metadata): two runs that train
    the same weights must write the same file, whatever the (random) temporary name of the atomic write."""
    import hashlib

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="mobilenetv3_small_050", input_size=64, crop={"size": 64})).eval()
    digests = set()
    for name in ("a/model.pt", "b/model.pt", "c/other_name.pt"):
        path = tmp_path / name
        save_checkpoint(path, model, {"stage": "test", "val_nme": 0.04})
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
        assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temporary left beside it
    assert len(digests) == 1
    loaded, _ = load_checkpoint(tmp_path / "c/other_name.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_flip_test_averages_the_mirrored_prediction_back_in_place():
    cfg = ModelConfig(backbone="mobilenetv3_small_050", input_size=64, head_channels=32)
    torch.manual_seed(0)
    plain = build_model(cfg).eval()
    flipping = build_model(cfg.model_copy(update={"flip_test": True})).eval()
    flipping.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, m, both = plain(x), plain(torch.flip(x, dims=[3])), flipping(x)
    from facelandmarks.schemes import IBUG68

    unflipped = torch.from_numpy(IBUG68.flip(m.numpy(), 64))
    torch.testing.assert_close(both, 0.5 * (a + unflipped))
