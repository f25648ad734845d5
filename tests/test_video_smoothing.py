"""One Euro smoothing of landmarks (Casiez et al., CHI 2012) and the ``video`` params section."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import RAW, ROOT

pytestmark = pytest.mark.needs_data  # reads data/raw (dvc pull); `make unit` deselects it


def _real_face() -> np.ndarray:
    """The 68 annotated points of a real 300-W face (0-based pixels)."""
    from facelandmarks.io.pts import read_pts

    return read_pts(sorted((RAW / "300w" / "helen_train").glob("*.pts"))[0]).astype(np.float64)


def _iod(p: np.ndarray) -> float:
    return float(np.linalg.norm(p[36] - p[45]))


def test_still_face_jitter_is_cut_and_a_still_face_stays_put():
    from facelandmarks.video import LandmarkSmoother, SmoothingParams

    face = _real_face()
    iod = _iod(face)
    rng = np.random.default_rng(0)
    noisy = face[None] + rng.normal(0, 0.02 * iod, size=(120, 68, 2))  # a still face, 2 % inter-ocular noise
    sm = LandmarkSmoother(SmoothingParams(min_cutoff=1.0, beta=1.0), 68, fps=30.0, scale=2.0 * iod)
    out = np.stack([sm(p, timestamp=k / 30.0) for k, p in enumerate(noisy)])
    assert out.shape == (120, 68, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], noisy[0], atol=1e-3)  # the first observation passes unchanged
    jitter_raw = np.linalg.norm(np.diff(noisy, axis=0), axis=-1).mean()
    jitter_out = np.linalg.norm(np.diff(out, axis=0), axis=-1).mean()
    assert jitter_out < 0.25 * jitter_raw
    # it stays on the face: the smoothed points are closer to the true ones than the noisy points
    assert np.linalg.norm(out[30:] - face, axis=-1).mean() < 0.6 * np.linalg.norm(noisy[30:] - face, axis=-1).mean()


def test_a_fast_move_is_followed_with_little_lag_and_beta_matters():
    """A face moving at one face size per second: the speed term (beta) raises the cutoff, so the lag
    shrinks compared with beta = 0 (a plain first-order low-pass at min_cutoff)."""
    from facelandmarks.video import LandmarkSmoother, SmoothingParams

    face = _real_face()
    side = 2.0 * _iod(face)
    T, fps = 60, 30.0
    path = face[None] + (np.arange(T) / fps * side)[:, None, None] * np.array([1.0, 0.0])  # x += side per second

    def lag(beta: float) -> float:
        sm = LandmarkSmoother(SmoothingParams(min_cutoff=1.0, beta=beta), 68, fps=fps, scale=side)
        out = np.stack([sm(p, k / fps) for k, p in enumerate(path)])
        behind = (path[-1, :, 0] - out[-1, :, 0]).mean()  # pixels behind at the end
        return behind / (side / fps)  # in frames

    slow, fast = lag(0.0), lag(5.0)
    # beta = 0: the steady-state lag of a first-order low-pass is tau / Te = fps / (2 pi fc) frames
    assert slow == pytest.approx(fps / (2 * math.pi * 1.0) - 0.0, rel=0.15)
    assert fast < 0.35 * slow


def test_timestamps_set_the_rate_and_bad_input_is_refused():
    from facelandmarks.video import LandmarkSmoother, SmoothingParams

    face = _real_face()
    a = LandmarkSmoother(SmoothingParams(beta=0.0), 68, fps=30.0, scale=100.0)
    b = LandmarkSmoother(SmoothingParams(beta=0.0), 68, fps=30.0, scale=100.0)
    a(face, 0.0), b(face, 0.0)
    moved = face + 10.0
    # the same step 1/30 s or 1 s later: a longer gap lets the low-pass move further
    near, far = a(moved, 1 / 30), b(moved, 1.0)
    assert (near - face).mean() < (far - face).mean() < 10.0
    with pytest.raises(ValueError, match="expected \\(68, 2\\)"):
        a(face[:5])
    with pytest.raises(ValueError, match="fps"):
        LandmarkSmoother(SmoothingParams(), 68, fps=0, scale=1.0)


def test_video_params_are_strict_and_the_project_file_validates(tmp_path):
    from facelandmarks.params import load_params
    from facelandmarks.video import VideoParams, load_video_params

    cfg = load_video_params(ROOT / "params.yaml")
    assert cfg == VideoParams.model_validate(load_params(ROOT / "params.yaml")["video"])
    assert cfg.tracker.detect_every >= 1 and cfg.smoothing.min_cutoff > 0
    bad = tmp_path / "params.yaml"
    bad.write_text("video:\n  tracker:\n    detect_evry: 5\n")
    with pytest.raises(ValueError, match="detect_evry"):
        load_video_params(bad)
    bad.write_text("video:\n  smoothing:\n    min_cutoff: 0\n")
    with pytest.raises(ValueError, match="min_cutoff"):
        load_video_params(bad)
    assert load_video_params(tmp_path / "missing.yaml") == VideoParams()
