"""Finetuning helpers: loading pretrained weights, re-initialising the head, freezing early stages."""

from __future__ import annotations

import pytest
import torch

from facelandmarks.model.checkpoint import CheckpointError, save_checkpoint
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.network import build_model
from facelandmarks.train.transfer import freeze_backbone_stages, load_pretrained, split_parameters

CFG = ModelConfig(backbone="mobilenetv3_small_050", input_size=64, head_channels=32)


@pytest.fixture
def pretrained(tmp_path):
    torch.manual_seed(0)
    model = build_model(CFG)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    return model, path


def test_same_scheme_copies_everything(pretrained):
    source, path = pretrained
    torch.manual_seed(1)
    target = build_model(CFG)
    assert load_pretrained(target, path) is False
    for a, b in zip(source.state_dict().values(), target.state_dict().values()):
        assert torch.equal(a, b)


def test_another_scheme_keeps_the_backbone_and_reinitialises_the_head(pretrained):
    source, path = pretrained
    torch.manual_seed(1)
    target = build_model(CFG.model_copy(update={"num_points": 5, "scheme": "mtcnn5"}))
    assert load_pretrained(target, path) is True
    for (k, a), b in zip(source.backbone.state_dict().items(), target.backbone.state_dict().values()):
        assert torch.equal(a, b), k
    assert target.head.out.weight.shape[0] == 5
    with pytest.raises(CheckpointError, match="reinit_head is 'never'"):
        load_pretrained(target, path, reinit_head="never")
    with pytest.raises(CheckpointError, match="another architecture"):
        load_pretrained(build_model(CFG.model_copy(update={"head": "regression"})), path)


def test_freezing_stages_freezes_stem_and_first_blocks_only():
    model = build_model(CFG)
    assert freeze_backbone_stages(model, 0) == []
    frozen = freeze_backbone_stages(model, 2)  # stem (bn1 level) and blocks.0
    assert frozen and all(n.startswith(("conv_stem", "bn1", "blocks.0.")) for n in frozen)
    assert any(n.startswith("blocks.0.") for n in frozen)
    backbone, head = split_parameters(model)
    assert len(head) == len(list(model.head.parameters()))
    assert len(backbone) == len(list(model.backbone.parameters())) - len(frozen)
    everything = build_model(CFG)
    freeze_backbone_stages(everything, 99)
    assert split_parameters(everything)[0] == []
