"""Finetuning helpers: loading pretrained weights, re-initialising the head, freezing early stages."""

from __future__ import annotations

import pytest
import torch

from facelandmarks.model.checkpoint import CheckpointError, save_checkpoint
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.network import build_model
from facelandmarks.train.transfer import (
    choose_alpha,
    freeze_backbone_stages,
    interpolate_weights,
    load_pretrained,
    split_parameters,
)

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


def test_interpolated_weights_are_exact_at_the_ends_and_the_mean_halfway():
    torch.manual_seed(0)
    a, b = build_model(CFG), build_model(CFG)
    for m in (a, b):  # distinct batch-norm statistics and counters too
        m.train()
        m(torch.rand(4, 3, 64, 64) * 4)
    pre, ft = a.state_dict(), b.state_dict()
    w0, w1, half = (interpolate_weights(pre, ft, x) for x in (0.0, 1.0, 0.5))
    for k in ft:
        if ft[k].is_floating_point():
            assert torch.equal(w0[k], pre[k]) and torch.equal(w1[k], ft[k]), k
            torch.testing.assert_close(half[k], (pre[k] + ft[k]) / 2, rtol=0, atol=1e-6)
        else:  # num_batches_tracked: the finetuned model's counter
            assert torch.equal(half[k], ft[k]), k
    model = build_model(CFG)
    model.load_state_dict(half)  # a loadable state dict of the same architecture


def test_interpolation_refuses_other_architectures_and_bad_alphas():
    pre = {"w": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match="shape"):
        interpolate_weights(pre, {"w": torch.zeros(3, 2)}, 0.5)
    with pytest.raises(ValueError, match="different tensors"):
        interpolate_weights(pre, {"v": torch.zeros(2, 3)}, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        interpolate_weights(pre, pre, 1.5)


def test_choose_alpha_takes_the_best_target_nme_among_those_within_the_forgetting_limit():
    target = {0.5: 0.100, 0.8: 0.094, 1.0: 0.092}
    guard = {0.5: {"300w": 0.0380}, 0.8: {"300w": 0.0395}, 1.0: {"300w": 0.0410}}
    # limit 0.0374 + 0.003 = 0.0404: alpha 1 forgets too much, 0.8 is the best of the rest
    assert choose_alpha(target, guard, {"300w": 0.0404}) == 0.8
    assert choose_alpha(target, guard, {"300w": 0.0500}) == 1.0  # all eligible: the lowest target NME
    assert choose_alpha(target, guard, {"300w": 0.0300}) == 0.5  # none eligible: the least excess
    assert choose_alpha(target, guard, {}) == 1.0  # no guarded data set
    assert choose_alpha({0.5: 0.09, 1.0: 0.09}, {0.5: {}, 1.0: {}}, {}) == 1.0  # a tie: the trained weights
    with pytest.raises(ValueError):
        choose_alpha({}, {}, {})
