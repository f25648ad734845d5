"""dlib baseline wrapper (src/facelandmarks/baselines/dlib68.py) on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from facelandmarks.baselines.dlib68 import BoxConversion, DlibLandmarker, box_to_rect, predictor_path, rect_to_box
from facelandmarks.crop.geometry import square_box
from facelandmarks.data.table import landmarks_bbox, stack_column
from facelandmarks.io.images import read_image


@pytest.fixture(scope="module")
def dlib68() -> DlibLandmarker:
    return DlibLandmarker()


def test_predictor_file_is_found_without_pkg_resources():
    p = predictor_path()
    assert p.name == "shape_predictor_68_face_landmarks.dat"
    assert p.stat().st_size > 50_000_000  # the 68-point model is about 100 MB


def test_detects_and_puts_68_points_inside_the_face_box(dlib68, raw_dir):
    image = read_image(raw_dir / "demo" / "images" / "face_recognition__obama.jpg")
    boxes, scores, pts = dlib68(image)
    assert boxes.shape == (1, 4) and scores.shape == (1,)
    assert pts.shape == (1, 68, 2) and pts.dtype == np.float32
    x0, y0, x1, y1 = boxes[0]
    side = max(x1 - x0, y1 - y0)
    margin = 0.25 * side  # the jaw and brows may reach slightly past HOG's box
    assert (pts[0, :, 0] > x0 - margin).all() and (pts[0, :, 0] < x1 + margin).all()
    assert (pts[0, :, 1] > y0 - margin).all() and (pts[0, :, 1] < y1 + margin).all()
    # iBUG order: point 36 is the subject's right outer eye corner (image left), 45 the left one
    assert pts[0, 36, 0] < pts[0, 45, 0]
    # mouth below the nose tip, nose tip below the eyes
    assert pts[0, 30, 1] > pts[0, [36, 45], 1].max() and pts[0, 57, 1] > pts[0, 30, 1]


def test_no_face_in_a_blank_photo(dlib68):
    boxes, scores, pts = dlib68(np.full((200, 300, 3), 128, np.uint8))
    assert boxes.shape == (0, 4) and pts.shape == (0, 68, 2)


def test_rejects_a_grey_image(dlib68):
    with pytest.raises(ValueError, match="uint8 RGB"):
        dlib68.detect(np.zeros((50, 50), np.uint8))


def test_box_rect_conventions_round_trip():
    rect = box_to_rect(np.array([-0.5, -0.5, 99.5, 49.5]))
    assert (rect.left(), rect.top(), rect.right(), rect.bottom()) == (0, 0, 99, 49)
    assert rect_to_box(rect).tolist() == [-0.5, -0.5, 99.5, 49.5]
    with pytest.raises(ValueError, match="non-finite"):
        box_to_rect(np.array([np.nan, 0, 10, 10]))


def test_box_conversion_recovers_a_known_mapping(annotations):
    df, _ = annotations
    src = landmarks_bbox(stack_column(df.head(30)))
    dst = square_box(src, 1.07, (0.03, -0.09))
    conv = BoxConversion.fit(src, dst)
    assert conv.n == 30
    assert conv.scale == pytest.approx(1.07, abs=1e-6)
    assert (conv.dx, conv.dy) == pytest.approx((0.03, -0.09), abs=1e-6)
    np.testing.assert_allclose(conv.apply(src), dst, atol=1e-3)
    with pytest.raises(ValueError, match="non-empty"):
        BoxConversion.fit(np.zeros((0, 4)), np.zeros((0, 4)))
