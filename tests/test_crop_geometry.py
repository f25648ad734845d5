"""Crop geometry on real photos: exact affine round trips and warps that agree with the affine."""

from __future__ import annotations

import numpy as np
import pytest

from facelandmarks.crop.config import CropConfig
from facelandmarks.crop.faces import crop_face
from facelandmarks.crop.geometry import crop_square, invert_affine, map_points, square_box, square_to_affine, warp_crop
from facelandmarks.io.images import read_image
from facelandmarks.io.pts import read_pts


@pytest.fixture(scope="module")
def afw_face(raw_dir):
    """A real AFW photo and the 68 points of one of its faces (0-based pixels)."""
    stem = sorted((raw_dir / "300w" / "afw").glob("*.pts"))[0]
    return read_image(stem.with_suffix(".jpg")), read_pts(stem)


def test_square_box_is_centred_square_of_scaled_longer_side():
    sq = square_box(np.array([10.0, 20.0, 50.0, 100.0]), scale=1.5)
    assert sq[2] - sq[0] == pytest.approx(120.0) and sq[3] - sq[1] == pytest.approx(120.0)
    assert (sq[0] + sq[2]) / 2 == pytest.approx(30.0) and (sq[1] + sq[3]) / 2 == pytest.approx(60.0)
    shifted = square_box(np.array([10.0, 20.0, 50.0, 100.0]), scale=1.0, offset=(0.0, -0.1))
    assert (shifted[1] + shifted[3]) / 2 == pytest.approx(60.0 - 8.0)
    with pytest.raises(ValueError, match="degenerate"):
        square_box(np.array([5.0, 5.0, 5.0, 5.0]), 1.3)


def test_square_edges_map_to_crop_edges():
    m = square_to_affine(np.array([100.0, 50.0, 300.0, 250.0]), 128)
    corners = map_points(np.array([[100.0, 50.0], [300.0, 250.0]]), m)
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [127.5, 127.5]], atol=1e-9)


@pytest.mark.parametrize("size,scale", [(128, 1.4), (96, 1.1), (256, 2.0)])
def test_landmarks_round_trip_photo_crop_photo_within_1e3_px(afw_face, size, scale):
    image, pts = afw_face
    box = np.concatenate([pts.min(0), pts.max(0)])
    crop, c2p = crop_face(image, box, CropConfig(size=size, scale=scale))
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert c2p.dtype == np.float64 and c2p.shape == (2, 3)
    in_crop = map_points(pts, invert_affine(c2p)).astype(np.float32)  # stored as float32 in crops.parquet
    back = map_points(in_crop, c2p)
    assert np.abs(back - pts).max() < 1e-3
    assert np.all((in_crop > -0.5) & (in_crop < size - 0.5))


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    im = img.astype(np.float64)
    return (im[y0, x0] * (1 - fx) * (1 - fy) + im[y0, x0 + 1] * fx * (1 - fy)
            + im[y0 + 1, x0] * (1 - fx) * fy + im[y0 + 1, x0 + 1] * fx * fy)


def test_warp_samples_photo_where_the_affine_says(afw_face):
    """Every crop pixel equals the photo sampled (bilinearly) at crop_to_photo(pixel): same convention."""
    image, pts = afw_face
    box = np.concatenate([pts.min(0), pts.max(0)])
    sq = square_box(box, 1.3)
    crop, c2p = crop_square(image, sq, 64, anti_alias=False)
    v, u = np.mgrid[0:64, 0:64]
    xy = map_points(np.stack([u.ravel(), v.ravel()], 1).astype(np.float64), c2p)
    h, w = image.shape[:2]
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] < h - 1)
    assert ok.mean() > 0.9
    expected = _bilinear(image, xy[ok, 0], xy[ok, 1])
    got = crop.reshape(-1, 3)[ok].astype(np.float64)
    assert np.abs(got - expected).max() <= 1.5  # OpenCV's fixed-point bilinear weights


def test_anti_aliasing_moves_no_content(afw_face):
    """The low-pass before shrinking blurs but does not shift: crops with and without it align."""
    image, pts = afw_face
    sq = square_box(np.concatenate([pts.min(0), pts.max(0)]), 1.4)
    m = square_to_affine(sq, 48)
    sharp = warp_crop(image, m, 48, anti_alias=False).astype(np.float64).mean(-1)
    smooth = warp_crop(image, m, 48, anti_alias=True).astype(np.float64).mean(-1)
    assert np.abs(sharp - smooth).mean() > 0.5  # the filter did something

    def shift_error(dx: int, dy: int) -> float:
        a = np.roll(smooth, (dy, dx), axis=(0, 1))[4:-4, 4:-4]
        return float(np.abs(a - sharp[4:-4, 4:-4]).mean())

    errs = {(dx, dy): shift_error(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
    assert min(errs, key=errs.get) == (0, 0)


def test_padding_outside_the_photo(afw_face):
    image, _ = afw_face
    h, w = image.shape[:2]
    sq = np.array([-w / 2, -h / 2, w / 2, -h / 2 + w])  # a square hanging off the top-left corner
    crop, c2p = crop_square(image, sq, 64, border_value=7)
    assert np.all(crop[:16, :16] == 7)
    assert np.any(crop[48:, 48:] != 7)
    np.testing.assert_allclose(map_points(map_points(np.array([[3.25, 60.5]]), invert_affine(c2p)), c2p), [[3.25, 60.5]], atol=1e-9)
