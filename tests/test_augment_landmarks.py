"""Landmarks stay on the image content through every augmentation, flips included.

Method: on a real training crop, a distinct coloured mark (a small Gaussian spot, added on a
copy darkened to half so nothing clips) is drawn at ONE landmark; the marked and the unmarked crop are
augmented with the same seed, so every random choice (geometry, noise, patches) is identical and
their difference is the transformed mark alone. Its centroid must fall on the transformed landmark
of the same point, which after a flip carries the mirrored index (scheme permutation).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from facelandmarks.augment.config import AugmentParams
from facelandmarks.augment.transforms import TRANSFORM_NAMES, augment_face, build_transforms, compose, variant_seed
from facelandmarks.io.images import read_image
from facelandmarks.schemes import IBUG68

TOL_PX = 1.5  # at a 128 px crop; the tolerance scales with the crop side (blur and resampling spread the mark)
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def face(small_crops):
    """A real 300-W training crop (detected by MTCNN) and its landmarks in crop pixels."""
    crops, _, _ = small_crops
    r = crops[(crops["dataset"] == "300w") & (crops["det_source"] == "mtcnn")].iloc[0]
    return read_image(r["crop_path"]), r["crop_landmarks"].astype(np.float64)


def _mark_centroids(pipeline, crop, pts, seed):
    """Augment once per landmark with a mark at that landmark; return (centroids, out landmarks, visible, flipped, holes)."""
    S = crop.shape[0]
    base = crop.astype(np.float64) * 0.5
    yy, xx = np.mgrid[0:S, 0:S]
    colours = np.random.default_rng(7).uniform(80, 125, (len(pts), 3))  # one distinct colour per point
    vis_in = np.ones(len(pts), bool)
    a0, kp, vis, flipped = augment_face(pipeline, base.round().astype(np.uint8), pts, vis_in, IBUG68, seed)
    cents = np.full((len(pts), 2), np.nan)
    for i, (x, y) in enumerate(pts):
        g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
        marked = np.clip(base + g[..., None] * colours[i], 0, 255).round().astype(np.uint8)
        ai, kpi, _, fi = augment_face(pipeline, marked, pts, vis_in, IBUG68, seed)
        assert fi == flipped and np.array_equal(kpi, kp)  # same seed, same transform
        d = np.abs(ai.astype(np.float64) - a0.astype(np.float64)).sum(-1)
        if d.max() < 20:  # the mark is gone (covered by a patch, or pushed out of the image)
            continue
        w = np.where(d > 0.5 * d.max(), d, 0.0)  # the mark's core: JPEG ringing stays below half its peak
        cents[i] = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
    return cents, kp, vis, flipped


def _hole_mask(pipeline, crop, pts, seed):
    """Pixels covered by occluding patches in this draw (constant, random colour per patch)."""
    pipeline.set_random_seed(seed)
    out = pipeline(image=crop, keypoints=pts)
    S = crop.shape[0]
    mask = np.zeros((S, S), bool)
    for name, p in out["applied_transforms"]:
        if name == "CoarseDropout":
            for x0, y0, x1, y1 in p["holes"]:
                mask[max(y0 - 4, 0) : y1 + 4, max(x0 - 4, 0) : x1 + 4] = True
    return mask


@pytest.mark.parametrize("name", [*TRANSFORM_NAMES, "all"])
def test_marks_land_on_their_transformed_landmarks(face, name):
    crop, pts = face
    transforms = build_transforms(AugmentParams(), always=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # photometric-only Compose warns about unused keypoints
        pipeline = compose(transforms if name == "all" else [transforms[name]])
    checked = total = 0
    for seed in SEEDS:
        cents, kp, vis, flipped = _mark_centroids(pipeline, crop, pts, variant_seed(42, name, seed))
        holes = _hole_mask(pipeline, crop, pts, variant_seed(42, name, seed)) if name in ("occlusion", "all") else None
        if name == "flip":
            assert flipped
        for i in range(len(pts)):
            k = int(IBUG68.flip_index[i]) if flipped else i  # where point i lives in the output array
            total += 1
            if not vis[k]:
                continue
            xk, yk = kp[k]
            if holes is not None and holes[int(np.clip(round(yk), 0, crop.shape[0] - 1)), int(np.clip(round(xk), 0, crop.shape[1] - 1))]:
                continue  # under or next to a patch: the mark is (partly) covered
            assert np.isfinite(cents[i]).all(), f"{name}: mark {i} vanished"
            err = np.hypot(*(cents[i] - kp[k]))
            assert err < TOL_PX * crop.shape[0] / 128, f"{name} seed {seed}: mark of point {i} is {err:.2f} px from its landmark"
            checked += 1
    # patches (two of up to 30% of the side, each with a 4 px margin) hide many marks; nothing else may
    need = 0.6 if holes is not None else 0.9
    assert checked >= need * total, f"{name}: only {checked}/{total} marks could be checked"


def test_flip_without_reindexing_would_be_caught(face):
    """The flip test is sensitive: keeping albumentations' order (no left/right swap) puts marks elsewhere."""
    crop, pts = face
    pipeline = compose([build_transforms(AugmentParams(), always=True)["flip"]])
    cents, kp, _, flipped = _mark_centroids(pipeline, crop, pts, 0)
    assert flipped
    wrong = np.hypot(*(cents - kp).T)  # compares mark i with output slot i
    asymmetric = IBUG68.flip_index != np.arange(68)
    assert np.median(wrong[asymmetric]) > 10 * TOL_PX
    # and the re-indexed positions are the scheme's own mirror of the input
    np.testing.assert_allclose(kp, IBUG68.flip(pts, crop.shape[1]), atol=1e-4)


def test_points_pushed_outside_are_marked_invisible(face):
    crop, pts = face
    params = AugmentParams(affine={"p": 1.0, "rotate": 0, "scale": (1.0, 1.0), "shift": 0.5})
    pipeline = compose([build_transforms(params)["affine"]])
    hidden = 0
    for seed in range(20):
        _, kp, vis, _ = augment_face(pipeline, crop, pts, np.ones(68, bool), IBUG68, seed)
        S = crop.shape[0]
        inside = (kp >= -0.5).all(1) & (kp <= S - 0.5).all(1)
        assert np.array_equal(vis, inside)
        hidden += int((~vis).sum())
    assert hidden > 0
