"""Landmark losses: L1, L2, Wing, Adaptive Wing, masked by visibility."""

from __future__ import annotations

import math

import pytest
import torch

from facelandmarks.model.codecs import SoftArgmaxCodec
from facelandmarks.model.losses import adaptive_wing, heatmap_js, landmark_loss, wing


@pytest.mark.parametrize("kind", ["l1", "l2", "wing", "awing"])
def test_loss_is_zero_at_zero_error_and_positive_otherwise(kind):
    target = torch.rand(3, 68, 2) * 128
    assert landmark_loss(target.clone(), target, kind=kind).item() == pytest.approx(0.0, abs=1e-6)
    assert landmark_loss(target + 0.7, target, kind=kind).item() > 0


@pytest.mark.parametrize("kind", ["l1", "l2", "wing", "awing"])
def test_hidden_points_are_ignored(kind):
    target = torch.rand(2, 68, 2) * 128
    pred = target + 1.0
    visible = torch.ones(2, 68, dtype=torch.bool)
    visible[:, :10] = False
    wild = pred.clone()
    wild[:, :10] += 1000.0  # hidden points far off change nothing
    assert landmark_loss(wild, target, visible, kind).item() == pytest.approx(
        landmark_loss(pred, target, visible, kind).item(), rel=1e-6
    )
    # the loss is a mean over visible points: same per-point error, same loss, whatever is hidden
    assert landmark_loss(pred, target, visible, kind).item() == pytest.approx(
        landmark_loss(pred, target, None, kind).item(), rel=1e-6
    )
    none_visible = torch.zeros_like(visible)
    assert landmark_loss(wild, target, none_visible, kind).item() == 0.0


def test_l1_and_l2_values():
    target = torch.zeros(1, 2, 2)
    pred = torch.tensor([[[3.0, -4.0], [1.0, 0.0]]])
    assert landmark_loss(pred, target, kind="l1").item() == pytest.approx((7 + 1) / 2)
    assert landmark_loss(pred, target, kind="l2").item() == pytest.approx((0.5 * 25 + 0.5 * 1) / 2)


def test_wing_matches_paper_formula_and_is_continuous():
    w, eps = 10.0, 2.0
    c = w - w * math.log(1 + w / eps)
    d = torch.tensor([0.5, 3.0, 9.999, 10.0, 25.0])
    expected = [w * math.log(1 + 0.5 / eps), w * math.log(1 + 3 / eps), w * math.log(1 + 9.999 / eps), 10 - c, 25 - c]
    assert wing(d).tolist() == pytest.approx(expected, rel=1e-5)
    assert wing(torch.tensor(w - 1e-4)).item() == pytest.approx(wing(torch.tensor(w)).item(), abs=1e-3)


def test_adaptive_wing_is_continuous_at_theta_and_adapts_to_the_target():
    theta = 0.5
    for y in (0.0, 0.3, 1.0):
        t = torch.tensor([y, y])
        below, above = adaptive_wing(torch.tensor([y + theta - 1e-5, y + theta + 1e-5]), t)
        assert below.item() == pytest.approx(above.item(), abs=1e-3)
    # near zero error the loss is flatter for background (y = 0) than for the foreground (y = 1)
    small = 0.05
    bg = adaptive_wing(torch.tensor([small]), torch.tensor([0.0])).item()
    fg = adaptive_wing(torch.tensor([1.0 + small]), torch.tensor([1.0])).item()
    assert 0 < bg < fg


def test_shape_mismatch_and_unknown_loss_are_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        landmark_loss(torch.zeros(1, 68, 2), torch.zeros(1, 5, 2))
    with pytest.raises(ValueError, match="unknown loss"):
        landmark_loss(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2), kind="huber")


def test_heatmap_js_is_zero_on_the_target_ln2_when_disjoint_and_matches_a_hand_computed_case():
    codec = SoftArgmaxCodec(stride=8, sigma=1.0)
    points = torch.tensor([[[43.5, 83.5], [100.0, 20.0]]])  # crop pixels of a 160-px crop (20x20 cells)
    target = codec.encode(points, (20, 20))
    assert heatmap_js(target, target).item() == 0.0
    one_hot = torch.zeros(1, 2, 20, 20)
    one_hot[0, :, 0, 0] = 1.0  # all mass in a corner cell the targets give ~nothing
    far = codec.encode(torch.tensor([[[155.5, 155.5], [155.5, 155.5]]]), (20, 20))
    # disjoint support: JS = ln 2 exactly; here the corner holds exp(-2 * 19^2 / 2)-ish of the target: ~ln 2
    assert heatmap_js(one_hot, far).item() == pytest.approx(math.log(2.0), abs=1e-6)
    # two cells, p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4); JS = (ln(4/3) + (ln(2/3) + ln 2) / 2) / 2 by hand
    p = torch.zeros(1, 1, 1, 2)
    p[..., 0] = 1.0
    q = torch.full((1, 1, 1, 2), 0.5)
    by_hand = 0.5 * (math.log(4 / 3) + 0.5 * (math.log(2 / 3) + math.log(2.0)))
    assert heatmap_js(p, q).item() == pytest.approx(by_hand, rel=1e-6)


def test_heatmap_js_ignores_hidden_points_and_points_outside_the_map():
    codec = SoftArgmaxCodec(stride=8, sigma=1.0)
    points = torch.tensor([[[40.0, 40.0], [80.0, 80.0], [900.0, 900.0]]])  # the third is far outside
    target = codec.encode(points, (20, 20))
    assert float(target[0, 2].sum()) < 0.5
    wrong = torch.softmax(torch.randn(1, 3, 20, 20), dim=-1)
    mixed = target.clone()
    mixed[0, 1] = wrong[0, 1]
    visible = torch.tensor([[True, False, True]])
    assert heatmap_js(mixed, target, visible).item() == 0.0  # the wrong map is hidden, the third is outside
    assert heatmap_js(mixed, target).item() > 0.0
    # gradients stay finite where the target map holds exact zeros (cells far from the point)
    logits = torch.randn(1, 3, 20, 20, requires_grad=True)
    heatmap_js(torch.softmax(logits.flatten(2), -1).view(1, 3, 20, 20), target).backward()
    assert bool((target == 0).any()) and bool(torch.isfinite(logits.grad).all())
    with pytest.raises(ValueError, match="differ in shape"):
        heatmap_js(target, target[:, :2])
