"""NME and its normalising distances."""

from __future__ import annotations

import numpy as np
import pytest

from facelandmarks.metrics.nme import nme, normaliser
from facelandmarks.schemes import IBUG68, MTCNN5


def _face():
    gt = np.zeros((1, 68, 2))
    gt[0, :, 0] = np.linspace(0, 67, 68)
    gt[0, :, 1] = np.linspace(10, 40, 68)
    gt[0, 36] = (20.0, 30.0)
    gt[0, 45] = (80.0, 30.0)
    return gt


def test_inter_ocular_nme_of_a_known_error():
    gt = _face()
    assert normaliser(gt, IBUG68).tolist() == [60.0]
    pred = gt.copy()
    pred[0, :, 0] += 3.0
    pred[0, :, 1] += 4.0  # every point 5 px off
    assert nme(pred, gt, normaliser(gt, IBUG68)).tolist() == pytest.approx([5 / 60])


def test_hidden_points_are_left_out():
    gt = _face()
    pred = gt.copy()
    pred[0, :10, 0] += 60.0  # only the first ten points are off ...
    visible = np.ones((1, 68), bool)
    visible[0, :10] = False  # ... and hidden
    assert nme(pred, gt, normaliser(gt, IBUG68), visible).tolist() == [0.0]
    assert nme(pred, gt, normaliser(gt, IBUG68)).tolist() == pytest.approx([10 * 60 / 68 / 60])
    assert np.isnan(nme(pred, gt, np.array([60.0]), np.zeros((1, 68), bool))[0])


def test_inter_pupil_and_box_normalisers():
    gt = _face()
    pupils = IBUG68.pupils(gt[0])
    assert normaliser(gt, IBUG68, "inter_pupil")[0] == pytest.approx(np.linalg.norm(pupils[0] - pupils[1]))
    wh = gt[0].max(0) - gt[0].min(0)
    assert normaliser(gt, IBUG68, "box")[0] == pytest.approx(np.sqrt(wh[0] * wh[1]))
    five = np.array([[[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]]], float)
    assert normaliser(five, MTCNN5).tolist() == [20.0]


def test_bad_input_is_refused():
    gt = _face()
    with pytest.raises(ValueError, match="68"):
        normaliser(gt[:, :5], IBUG68)
    with pytest.raises(ValueError, match="unknown normaliser"):
        normaliser(gt, IBUG68, "diagonal")
    with pytest.raises(ValueError, match="positive"):
        nme(gt, gt, np.array([0.0]))
    with pytest.raises(ValueError, match="both be"):
        nme(gt[:, :5], gt, np.array([1.0]))
