"""The video benchmark's measures on cases with known answers: jitter, smoothing lag and track coverage."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.video import coverage, jitter, smoothing_lag


def _face(iod: float = 50.0) -> np.ndarray:
    """68 points of a face whose outer eye corners (36, 45) are ``iod`` pixels apart, (68, 2) float64."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (68, 2))
    pts[36], pts[45] = (25.0, 40.0), (25.0 + iod, 40.0)
    return pts


def test_jitter_of_a_face_moving_k_pixels_per_frame_is_k_over_the_inter_ocular_distance():
    face = _face(50.0)
    still = np.stack([face] * 10)
    moving = np.stack([face + [3.0 * t, 4.0 * t] for t in range(10)])  # 5 px per frame
    assert jitter([still])["mean"] == 0.0
    got = jitter([moving, still])
    assert got["pairs"] == 18 and got["mean"] == pytest.approx((9 * 0.1 + 9 * 0.0) / 18)


def test_smoothing_lag_finds_a_known_delay():
    t = np.arange(120, dtype=np.float64)
    signal = np.sin(t / 6.0)[:, None, None] * 20.0 + _face()[None]  # (T, 68, 2), a smooth swing
    delayed = np.concatenate([signal[:2], signal[:-2]])  # every point two frames late
    assert smoothing_lag(signal, signal) == pytest.approx(0.0, abs=0.05)
    assert smoothing_lag(signal, delayed) == pytest.approx(2.0, abs=0.1)


def test_coverage_counts_detections_that_a_track_overlaps():
    a, b = np.array([0, 0, 10, 10], float), np.array([50, 50, 70, 70], float)
    detected = [np.stack([a, b]), np.stack([a, b])]
    tracked = [np.stack([a, b]), a[None] + [30, 30, 30, 30]]  # frame 2: one track far from both detections
    got = coverage(tracked, detected)
    assert got["covered"] == pytest.approx(2 / 4) and got["tracked_per_frame"] == 1.5 and got["detected_per_frame"] == 2.0


@pytest.mark.needs_data
def test_still_clip_is_one_photo_repeated_with_camera_noise_only(tmp_path):
    """The still-face clip: the photo letterboxed into every frame, frames differing by noise and compression only."""
    from benchmarks.video import STILL_PHOTO, _frames, _fps_of, still_clip
    from facelandmarks.io.images import read_image

    clip = still_clip(STILL_PHOTO, tmp_path / "still.mp4", frames=12, fps=25.0, size=(320, 180), noise=3.0)
    frames = np.stack([f for _, _, f in _frames(clip)]).astype(np.float64)
    assert frames.shape == (12, 180, 320, 3) and _fps_of(clip) == pytest.approx(25.0)
    photo = read_image(STILL_PHOTO)
    width = round(photo.shape[1] * 180 / photo.shape[0])  # the photo is taller than 16:9: black bars left and right
    x0 = (320 - width) // 2
    assert frames[:, :, : x0 - 2].mean() < 4 and frames[:, :, x0 + width + 2 :].mean() < 4
    inner = frames[:, :, x0 + 2 : x0 + width - 2]
    assert inner.mean() > 30
    # frame to frame: noise (mostly compressed away, as a camera's is), no change of content: the same photo moved
    # by 2 px differs from itself by more than any two frames do
    step = np.abs(np.diff(inner, axis=0)).mean(axis=(1, 2, 3))
    moved = np.abs(inner[0, 2:] - inner[0, :-2]).mean()
    assert np.all(step > 0.1) and np.all(step < 3.0) and moved > 2 * step.max()
    # the same seed writes the same clip
    again = np.stack([f for _, _, f in _frames(still_clip(STILL_PHOTO, tmp_path / "again.mp4", frames=12, fps=25.0,
                                                          size=(320, 180), noise=3.0))])
    assert np.array_equal(again, frames.astype(np.uint8))
