"""MTCNN detector on real photos: faces found, batching and downscaling change nothing that matters."""

from __future__ import annotations

import numpy as np
import pytest

from facelandmarks.detect.matching import box_iou, match_boxes
from facelandmarks.detect.mtcnn import DetectorConfig, FaceDetector
from facelandmarks.io.images import read_image
from facelandmarks.io.pts import read_pts


@pytest.fixture(scope="module")
def detector():
    import torch

    torch.set_num_threads(1)
    return FaceDetector(DetectorConfig(device="cpu"))


@pytest.fixture(scope="module")
def helen(raw_dir):
    """Four real HELEN photos with their landmark boxes."""
    stems = sorted((raw_dir / "300w" / "helen_train").glob("*.pts"))[:4]
    out = []
    for s in stems:
        pts = read_pts(s)
        out.append((read_image(s.with_suffix(".jpg")), np.concatenate([pts.min(0), pts.max(0)])))
    return out


def test_finds_the_annotated_face_with_types_and_shapes(detector, helen):
    dets = detector.detect([img for img, _ in helen])
    assert len(dets) == len(helen)
    for d, (img, lm_box) in zip(dets, helen):
        assert d.boxes.dtype == np.float32 and d.boxes.shape[1:] == (4,)
        assert d.scores.dtype == np.float32 and d.points.shape == (len(d), 5, 2)
        assert np.all(np.diff(d.scores) <= 0)  # by descending score
        idx, iou = match_boxes(d.boxes, lm_box[None], 0.3)
        assert idx[0] >= 0, f"annotated face not found (best IoU {iou[0]:.2f})"
        # MTCNN's 5 points lie inside the annotated face
        p = d.points[idx[0]]
        assert np.all((p >= lm_box[:2] - 5) & (p <= lm_box[2:] + 5))


def test_batched_equals_one_by_one(detector, helen):
    # two photos of the same size form a batch; results must not depend on batching
    img = helen[0][0]
    flipped = np.ascontiguousarray(img[:, ::-1])
    batched = detector.detect([img, flipped])
    single = [detector.detect([img])[0], detector.detect([flipped])[0]]
    for b, s in zip(batched, single):
        assert len(b) == len(s)
        np.testing.assert_allclose(b.boxes, s.boxes, atol=0.05)
        np.testing.assert_allclose(b.points, s.points, atol=0.05)


def test_downscaled_detection_maps_back_to_photo_pixels(helen):
    img, lm_box = helen[1]
    full = FaceDetector(DetectorConfig(device="cpu", max_side=0)).detect([img])[0]
    small = FaceDetector(DetectorConfig(device="cpu", max_side=max(img.shape[:2]) // 2)).detect([img])[0]
    assert len(full) and len(small)
    iou = box_iou(full.boxes[:1], small.boxes)
    assert iou.max() > 0.8
    j = int(iou.argmax())
    side = full.boxes[0, 2] - full.boxes[0, 0]
    assert np.abs(full.points[0] - small.points[j]).max() < 0.06 * side


def test_padding_to_a_common_size_batches_different_photos_alike(detector, helen):
    """pad_multiple lets photos of different sizes share a batch without moving their boxes."""
    imgs = [helen[0][0], helen[2][0]]
    assert imgs[0].shape != imgs[1].shape
    padded = FaceDetector(DetectorConfig(device="cpu", pad_multiple=1024)).detect(imgs)
    plain = detector.detect(imgs)
    for p, q in zip(padded, plain):
        assert len(p) >= 1 and len(q) >= 1
        assert box_iou(q.boxes[:1], p.boxes).max() > 0.9


def test_multi_face_demo_photo(detector, raw_dir):
    img = read_image(raw_dir / "demo" / "images" / "face_recognition__obama_and_biden.jpg")
    [d] = detector.detect([img])
    assert len(d) >= 2
    assert box_iou(d.boxes, d.boxes)[np.triu_indices(len(d), 1)].max() < 0.3  # distinct faces


def test_bad_input_is_a_clear_error(detector):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        detector.detect([np.zeros((10, 10), np.uint8)])


def test_match_boxes_is_one_to_one_and_respects_threshold():
    dets = np.array([[0, 0, 10, 10], [100, 100, 120, 120], [1, 1, 11, 11]], np.float32)
    refs = np.array([[0, 0, 10, 10], [2, 2, 12, 12], [300, 300, 310, 310]], np.float32)
    idx, iou = match_boxes(dets, refs, 0.3)
    assert idx.tolist() == [0, 2, -1]
    assert iou[0] == pytest.approx(1.0) and iou[2] == 0.0
    idx, _ = match_boxes(np.zeros((0, 4)), refs, 0.3)
    assert idx.tolist() == [-1, -1, -1]


def _rotate_about_centre(img: np.ndarray, points: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The photo turned by ``angle`` degrees (counter-clockwise, same size) and its points turned alike."""
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h)), points @ m[:, :2].T + m[:, 2]


def test_rotated_retry_finds_a_tilted_face_and_maps_its_box_back(raw_dir):
    """A HELEN face turned by 90 degrees: upright MTCNN scores it below 0.9; with the rotated retry at -90
    degrees (turning it back upright, on a canvas of swapped sides) the face is found with a high score, and
    the box centre and MTCNN's eye points land on the face's own landmarks in the turned photo's pixels."""
    stem = raw_dir / "300w" / "helen_train" / "100040721_1.pts"
    img, pts = _rotate_about_centre(read_image(stem.with_suffix(".jpg")), read_pts(stem).astype(np.float64), 90.0)
    base = dict(device="cpu", thresholds=(0.3, 0.4, 0.4), min_score=0.0)
    upright = FaceDetector(DetectorConfig(**base)).detect([img])[0]
    assert not len(upright) or upright.scores.max() < 0.9  # the tilt defeats plain MTCNN
    d = FaceDetector(DetectorConfig(**base, rotate_angles=(-90.0,))).detect([img])[0]
    assert len(d) and d.scores[0] >= 0.9
    iod = np.linalg.norm(pts[36:42].mean(0) - pts[42:48].mean(0))
    centre = 0.5 * (d.boxes[0, :2] + d.boxes[0, 2:])
    assert np.linalg.norm(centre - pts[17:].mean(0)) < 0.5 * iod  # on the face (inner points' centre)
    # MTCNN's two eye points sit on the turned eyes' centres
    eyes = np.stack([pts[36:42].mean(0), pts[42:48].mean(0)])
    assert np.linalg.norm(d.points[0, :2] - eyes, axis=1).max() < 0.25 * iod
    assert upright.scores.max() < d.scores[0]
    # a confident upright face never triggers the retry: same result as without it
    plain = FaceDetector(DetectorConfig(**base)).detect([read_image(stem.with_suffix(".jpg"))])[0]
    retried = FaceDetector(DetectorConfig(**base, rotate_angles=(-90.0,))).detect([read_image(stem.with_suffix(".jpg"))])[0]
    np.testing.assert_array_equal(plain.boxes, retried.boxes)
