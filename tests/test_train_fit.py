"""The fit loop on real faces: the loss falls, the best checkpoint loads back, an interrupted run resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facelandmarks.model.checkpoint import load_checkpoint, read_checkpoint
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.prediction import predict_crops
from facelandmarks.model.network import build_model
from facelandmarks.schemes import IBUG68
from facelandmarks.train.dataset import FaceDataset, OnlineAugment
from facelandmarks.train.loop import FitOptions, fit
from facelandmarks.train.schedule import warmup_cosine_factor

CFG = ModelConfig(backbone="mobilenetv3_small_050", head="heatmap", input_size=64, head_channels=32)


def _opts(epochs: int, **kw) -> FitOptions:
    return FitOptions(epochs=epochs, batch_size=4, warmup_epochs=0.5, patience=0, device="cpu", seed=7,
                      progress=False, **kw)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(CFG)


@pytest.mark.slow
def test_two_epochs_reduce_the_loss_and_write_a_checkpoint_that_predicts_the_same(landmark_crops, tmp_path):
    torch.set_num_threads(2)
    train, val = landmark_crops.subset(slice(0, 16)), landmark_crops.subset(slice(16, 24))
    model = _model()
    data = FaceDataset(train, IBUG68, OnlineAugment(rotate_deg=5, scale=0.05, shift=0.02), seed=1)
    result = fit(model, data, val, [{"params": model.parameters(), "lr": 3e-3}], _opts(2),
                 tmp_path / "model.pt", tmp_path / "last.pt", fingerprint="a")
    assert result.epochs_run == 2 and len(result.history) == 2
    assert result.history[1].train_loss < result.history[0].train_loss
    assert result.best_val_nme == min(h.val_nme for h in result.history)
    loaded, cfg = load_checkpoint(tmp_path / "model.pt")
    assert cfg == CFG
    np.testing.assert_array_equal(predict_crops(loaded, val.images), predict_crops(model, val.images))
    assert read_checkpoint(tmp_path / "last.pt")["finished"] is True


@pytest.mark.slow
def test_heatmap_supervision_changes_the_training_and_needs_a_heatmap_head(landmark_crops, tmp_path):
    torch.set_num_threads(2)
    train, val = landmark_crops.subset(slice(0, 16)), landmark_crops.subset(slice(16, 24))
    data = FaceDataset(train, IBUG68, OnlineAugment(), seed=1)
    runs = {}
    for weight in (0.0, 10.0):
        model = _model()
        runs[weight] = fit(model, data, val, [{"params": model.parameters(), "lr": 3e-3}],
                           _opts(1, heatmap_loss=weight), tmp_path / f"m{weight}.pt", tmp_path / f"l{weight}.pt")
    # same seed and data: the JS term (> 0 for any softmax map) is what makes the loss larger
    assert runs[10.0].history[0].train_loss > runs[0.0].history[0].train_loss
    regression = build_model(ModelConfig(backbone="mobilenetv3_small_050", head="regression", input_size=64))
    with pytest.raises(ValueError, match="needs a heatmap head"):
        fit(regression, data, val, [{"params": regression.parameters(), "lr": 3e-3}], _opts(1, heatmap_loss=1.0),
            tmp_path / "r.pt", tmp_path / "rl.pt")


class _Interrupt(Exception):
    pass


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_last_pt_and_ends_where_an_uninterrupted_one_does(landmark_crops, tmp_path):
    torch.set_num_threads(2)
    train, val = landmark_crops.subset(slice(0, 12)), landmark_crops.subset(slice(16, 20))
    aug = OnlineAugment(rotate_deg=5, scale=0.05, shift=0.02)

    def run(folder, on_epoch=None):
        model = _model()
        res = fit(model, FaceDataset(train, IBUG68, aug, seed=1), val, [{"params": model.parameters(), "lr": 2e-3}],
                  _opts(3), folder / "model.pt", folder / "last.pt", fingerprint="same", on_epoch=on_epoch)
        return model, res

    straight, straight_res = run(tmp_path / "straight")

    def interrupt(entry):
        if entry.epoch == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run(tmp_path / "resumed", interrupt)
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    resumed, resumed_res = run(tmp_path / "resumed")
    assert resumed_res.resumed_from_epoch == 1
    assert resumed_res.epochs_run == 3
    assert [h.val_nme for h in resumed_res.history] == pytest.approx([h.val_nme for h in straight_res.history])
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    # another fingerprint (params or data changed) starts afresh
    other = _model()
    fresh = fit(other, FaceDataset(train, IBUG68, aug, seed=1), val, [{"params": other.parameters(), "lr": 2e-3}],
                _opts(1), tmp_path / "resumed" / "model.pt", tmp_path / "resumed" / "last.pt", fingerprint="other")
    assert fresh.resumed_from_epoch == -1 and fresh.epochs_run == 1


def test_warmup_then_cosine():
    f = [warmup_cosine_factor(s, 100, 10, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))
    assert f[-1] == pytest.approx(0.01, abs=0.002)


def test_the_schedule_depends_on_the_step_only():
    # no time argument exists any more: the same step gives the same LR on any machine
    f = [warmup_cosine_factor(s, 100, 0, 0.0) for s in range(101)]
    assert f[50] == pytest.approx(0.5) and f[100] == pytest.approx(0.0)


@pytest.mark.slow
def test_two_runs_with_the_same_inputs_give_identical_validation_nme(landmark_crops, tmp_path):
    """Same data, params and seed: bitwise the same validation NME every epoch and the same best epoch.

    Exact equality holds on the CPU with a fixed thread count (2): every op is then deterministic (same
    reduction order); on CUDA some kernels are not, so only the CPU is checked here.
    """
    torch.set_num_threads(2)
    train, val = landmark_crops.subset(slice(0, 12)), landmark_crops.subset(slice(16, 24))
    aug = OnlineAugment(rotate_deg=10, scale=0.05, shift=0.03)

    def run(folder):
        model = _model()
        res = fit(model, FaceDataset(train, IBUG68, aug, seed=3), val, [{"params": model.parameters(), "lr": 3e-3}],
                  _opts(3, resume=False), folder / "model.pt", folder / "last.pt", fingerprint="x")
        return model, res

    (m1, r1), (m2, r2) = run(tmp_path / "a"), run(tmp_path / "b")
    assert [h.val_nme for h in r1.history] == [h.val_nme for h in r2.history]  # exact
    assert [h.train_loss for h in r1.history] == [h.train_loss for h in r2.history]
    assert [h.lr for h in r1.history] == [h.lr for h in r2.history]
    assert r1.best_epoch == r2.best_epoch and r1.best_val_nme == r2.best_val_nme
    assert len({h.val_nme for h in r1.history}) == 3  # training moved: the equality is not trivial
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert not r1.stopped_by_time_cap


@pytest.mark.slow
def test_the_time_cap_stops_keeps_the_best_and_says_so(landmark_crops, tmp_path):
    torch.set_num_threads(2)
    train, val = landmark_crops.subset(slice(0, 8)), landmark_crops.subset(slice(16, 20))
    model = _model()
    # a cap of 1 microsecond is always spent by the end of the first epoch
    res = fit(model, FaceDataset(train, IBUG68, None, seed=1), val, [{"params": model.parameters(), "lr": 1e-3}],
              _opts(5, max_minutes=1e-8), tmp_path / "model.pt", tmp_path / "last.pt", fingerprint="cap")
    assert res.stopped_by_time_cap and not res.stopped_early
    assert res.epochs_run == 1 and res.best_epoch == 0
    loaded, _ = load_checkpoint(tmp_path / "model.pt")
    np.testing.assert_array_equal(predict_crops(loaded, val.images), predict_crops(model, val.images))


def test_mixed_rows_are_drawn_from_seed_and_epoch(landmark_crops, infant_crops):
    infants, adults = infant_crops.subset(slice(0, 6)), landmark_crops.subset(slice(0, 20))
    a = FaceDataset(infants, IBUG68, None, seed=5, mix=[(adults, 1.5)])
    b = FaceDataset(infants, IBUG68, None, seed=5, mix=[(adults, 1.5)])
    assert len(a) == 6 + 9
    ids = lambda d: [d._row(i)[0].face_ids[d._row(i)[1]] for i in range(len(d))]  # noqa: E731
    first = ids(a)
    assert first[:6] == list(infants.face_ids)
    assert set(first[6:]) <= set(adults.face_ids) and len(set(first[6:])) == 9  # no repeats within an epoch
    assert ids(b) == first
    a.set_epoch(1)
    assert ids(a)[6:] != first[6:]  # another epoch, other adult rows
    img, pts, vis = a[10]
    r = a._row(10)
    assert torch.equal(img, torch.from_numpy(r[0].images[r[1]]))
    assert torch.equal(pts, torch.from_numpy(r[0].landmarks[r[1]]))
