"""CED, failure rate and AUC (facelandmarks.metrics.ced): the 300-W / Wing-loss protocol."""

from __future__ import annotations

import numpy as np
import pytest

from facelandmarks.metrics.ced import auc, ced_curve, failure_rate, summarize, threshold_key
from facelandmarks.metrics.nme import nme, normaliser
from facelandmarks.schemes import IBUG68


def test_failure_rate_counts_errors_strictly_above_the_threshold():
    e = np.array([0.01, 0.08, 0.0801, 0.2, np.inf])
    assert failure_rate(e, 0.08) == pytest.approx(3 / 5)  # 0.08 itself is not a failure
    assert failure_rate(e, 0.10) == pytest.approx(2 / 5)


def test_auc_is_the_normalised_area_under_the_ced():
    rng = np.random.default_rng(0)
    e = np.concatenate([rng.gamma(2.0, 0.025, 500), [np.inf, np.inf]])
    for t in (0.08, 0.10):
        # numerical integral of the CED on a fine grid (trapezoid) agrees with the exact formula
        x = np.linspace(0.0, t, 20001)
        f = np.searchsorted(np.sort(e), x, side="right") / len(e)
        numeric = float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(x)) / t)
        assert auc(e, t) == pytest.approx(numeric, abs=1e-4)


def test_auc_bounds_and_known_values():
    assert auc(np.zeros(4), 0.08) == 1.0
    assert auc(np.full(4, np.inf), 0.08) == 0.0
    assert auc(np.array([0.04]), 0.08) == pytest.approx(0.5)  # counts from 0.04 to 0.08: half the range
    assert auc(np.array([0.0, np.inf]), 0.1) == pytest.approx(0.5)


def test_ced_curve_is_a_monotone_cumulative_fraction():
    e = np.array([0.0, 0.02, 0.05, 0.05, 0.2, np.inf])
    x, f = ced_curve(e, max_error=0.1, step=0.01)
    assert x[0] == 0.0 and x[-1] == pytest.approx(0.1) and len(x) == 11
    assert np.all(np.diff(f) >= 0)
    assert f[0] == pytest.approx(1 / 6)  # the perfect face
    assert f[x.tolist().index(0.05)] == pytest.approx(4 / 6)  # <= 0.05 inclusive
    assert f[-1] == pytest.approx(4 / 6)  # 0.2 and the missed face never arrive


def test_nan_and_empty_errors_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        failure_rate(np.array([0.1, np.nan]), 0.08)
    with pytest.raises(ValueError):
        auc(np.array([]), 0.08)
    with pytest.raises(ValueError, match="positive"):
        auc(np.array([0.1]), 0.0)


def test_summarize_keys_have_no_dots():
    s = summarize(np.array([0.05, 0.09, np.inf]), (0.08, 0.10))
    assert set(s) == {"failure_rate_08", "auc_08", "failure_rate_10", "auc_10"}
    assert s["failure_rate_08"] == pytest.approx(2 / 3) and s["failure_rate_10"] == pytest.approx(1 / 3)
    assert threshold_key(0.075) == "075" and threshold_key(0.1) == "10"


def test_ced_of_real_faces_with_a_known_shift(annotations):
    """Shifting real iBUG-68 faces by a fraction of their inter-ocular distance gives exactly that NME."""
    df = annotations[0]
    gt = np.stack(df[df["dataset"] == "infanface"]["landmarks"].head(40).to_numpy()).astype(np.float64)
    d = normaliser(gt, IBUG68, "inter_ocular")
    frac = np.linspace(0.0, 0.15, len(gt))
    pred = gt + (frac * d)[:, None, None] * np.array([0.6, 0.8])  # a unit vector: error = frac * d
    e = nme(pred, gt, d)
    np.testing.assert_allclose(e, frac, atol=1e-9)
    assert failure_rate(e, 0.08) == pytest.approx(float((frac > 0.08).mean()))
    assert auc(e, 0.10) == pytest.approx(float(np.clip(1 - frac / 0.10, 0, None).mean()))
