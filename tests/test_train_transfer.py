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


def _bn_stats(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.backbone.state_dict().items() if k.endswith(("running_mean", "running_var"))}


def test_kept_batchnorm_statistics_do_not_move_while_the_weights_train():
    """``frozen_modules_eval(all_batchnorm=True)`` (``finetune.freeze_bn``): a training step changes the weights
    but not one backbone running statistic; without it the statistics move; the head's batch norms still train."""
    from facelandmarks.train.transfer import frozen_modules_eval

    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64) * 2 + 1  # another domain's statistics than the initial ones
    for keep in (True, False):
        model = build_model(CFG)
        before, head_before = _bn_stats(model), model.head.state_dict()["lateral.0.1.running_mean"].clone()
        weights = [p.detach().clone() for p in model.backbone.parameters()]
        frozen_modules_eval(model, all_batchnorm=keep)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model.forward_train(x)["coords"].square().mean().backward()
        opt.step()
        after = _bn_stats(model)
        moved = [k for k in before if not torch.equal(before[k], after[k])]
        assert (moved == []) is keep, moved[:3]
        assert any(not torch.equal(a, b) for a, b in zip(weights, model.backbone.parameters()))  # weights trained
        assert not torch.equal(head_before, model.head.state_dict()["lateral.0.1.running_mean"])
