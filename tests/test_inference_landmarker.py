"""FaceLandmarker: photo -> faces with 68 landmarks, the one path shared by CLI, service and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import RAW

DEMO = RAW / "demo" / "images"
pytestmark = pytest.mark.slow  # every test here uses the briefly trained model (tiny_checkpoint)


@pytest.fixture(scope="module")
def landmarker(tiny_checkpoint):
    from facelandmarks import FaceLandmarker

    # the product's detection floor (serve.detect_min_score): what `predict` and the service answer
    return FaceLandmarker.load(tiny_checkpoint, device="cpu", min_score=0.9)


def _read(name: str) -> np.ndarray:
    from facelandmarks.io.images import read_image

    return read_image(DEMO / name)


def test_public_import_and_face_fields(landmarker):
    import facelandmarks
    from facelandmarks import Face, FaceLandmarker

    assert "FaceLandmarker" in facelandmarks.__all__ and isinstance(landmarker, FaceLandmarker)
    image = _read("face_recognition__obama.jpg")
    faces = landmarker(image)
    assert len(faces) == 1 and isinstance(faces[0], Face)
    f = faces[0]
    assert f.box.shape == (4,) and f.box.dtype == np.float32
    assert f.landmarks.shape == (68, 2) and f.landmarks.dtype == np.float32
    assert np.isfinite(f.landmarks).all() and 0.9 < f.score <= 1.0
    h, w = image.shape[:2]
    assert 0 <= f.box[0] < f.box[2] <= w and 0 <= f.box[1] < f.box[3] <= h
    d = f.to_dict()
    assert len(d["landmarks"]) == 68 and len(d["box"]) == 4


def test_every_face_of_a_group_photo_batched_together(landmarker):
    image = _read("facenet_pytorch__multiface.jpg")
    faces = landmarker(image)
    assert len(faces) >= 5  # a group photo
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)
    for f in faces:  # each face's points near its own box: faces were not mixed up in the batch
        centre = (f.box[:2] + f.box[2:]) / 2
        assert np.linalg.norm(f.landmarks.mean(axis=0) - centre) < 0.5 * (f.box[2] - f.box[0])


def test_batched_photos_equal_one_by_one(landmarker):
    a, b = _read("face_recognition__biden.jpg"), _read("face_recognition__two_people.jpg")
    together = landmarker.predict([a, b])
    alone = [landmarker(a), landmarker(b)]
    assert [len(x) for x in together] == [len(x) for x in alone] == [1, 2]
    for fs, gs in zip(together, alone):
        for f, g in zip(fs, gs):
            np.testing.assert_allclose(f.landmarks, g.landmarks, atol=1e-3)


def test_boxes_of_several_photos_in_one_batch_equal_photo_by_photo(landmarker):
    """The crops protocol of evaluation batches the boxes of several photos: same points as one photo at a time,
    each photo's points in its own pixels, and a photo without boxes gets an empty array."""
    a, b = _read("face_recognition__biden.jpg"), _read("face_recognition__two_people.jpg")
    boxes_a = np.stack([f.box for f in landmarker(a)])
    boxes_b = np.stack([f.box for f in landmarker(b)])
    together = landmarker.landmarks_in_photo_boxes([a, b, a], [boxes_a, boxes_b, np.zeros((0, 4))])
    assert [p.shape for p in together] == [(1, 68, 2), (2, 68, 2), (0, 68, 2)]
    assert all(p.dtype == np.float32 for p in together)
    np.testing.assert_allclose(together[0], landmarker.landmarks_in_boxes(a, boxes_a), atol=1e-3)
    np.testing.assert_allclose(together[1], landmarker.landmarks_in_boxes(b, boxes_b), atol=1e-3)
    assert not np.allclose(together[1][0], together[1][1], atol=5.0)  # two different faces, not one repeated
    with pytest.raises(ValueError, match="2 photos but 1 box arrays"):
        landmarker.landmarks_in_photo_boxes([a, b], [boxes_a])


def test_landmarks_follow_the_photo_when_it_is_shifted(landmarker):
    """Predictions are in photo pixels: padding the photo on the left/top moves them by exactly the pad."""
    image = _read("face_recognition__obama.jpg")
    padded = np.pad(image, ((40, 0), (64, 0), (0, 0)), mode="edge")
    [f] = landmarker(image)
    g = landmarker.landmarks_in_boxes(padded, (f.box + np.array([64, 40, 64, 40], np.float32))[None])[0]
    np.testing.assert_allclose(g, f.landmarks + np.array([64, 40]), atol=0.5)


def test_grayscale_rgba_and_16_bit_arrays(landmarker):
    image = _read("face_recognition__obama.jpg")
    gray = image.mean(axis=2).astype(np.uint8)
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    deep = image.astype(np.uint16) * 257
    for arr in (gray, rgba, deep):
        faces = landmarker(arr)
        assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2)


def test_no_face_gives_an_empty_list(landmarker):
    image = _read("face_recognition__obama.jpg")
    assert landmarker(image[:60, :60]) == []  # a corner of the photo: background only
    assert landmarker.predict([]) == []


def test_load_from_a_folder_and_bad_sources(tiny_checkpoint, tmp_path):
    from facelandmarks import FaceLandmarker
    from facelandmarks.inference.source import ModelSourceError
    from facelandmarks.model.checkpoint import CheckpointError

    lm = FaceLandmarker.load(Path(tiny_checkpoint).parent, device="cpu")
    assert lm.config.scheme == "ibug68" and len(lm.checkpoint_sha256) == 64
    with pytest.raises(ModelSourceError, match="no such file"):
        FaceLandmarker.load(tmp_path / "missing.pt")
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="model.pt"):
        FaceLandmarker.load(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="no facelandmarks checkpoint"):
        FaceLandmarker.load(tmp_path / "empty")


def test_the_products_detection_settings_lay_over_the_stored_ones(tiny_checkpoint):
    """``load(min_score, detect_max_side, rotate_angles)`` replace only what is given: a champion trained before the
    rotated retry existed gets it; ``()`` turns it off; None keeps what the model stored."""
    from facelandmarks import FaceLandmarker

    stored = FaceLandmarker.load(tiny_checkpoint, device="cpu").detector.config
    retry = FaceLandmarker.load(tiny_checkpoint, device="cpu", rotate_angles=[-30, 30]).detector.config
    off = FaceLandmarker.load(tiny_checkpoint, device="cpu", rotate_angles=(), min_score=0.95).detector.config
    assert retry.rotate_angles == (-30.0, 30.0) and retry.min_score == stored.min_score and retry.max_side == stored.max_side
    assert off.rotate_angles == () and off.min_score == 0.95
    assert FaceLandmarker.load(tiny_checkpoint, device="cpu", rotate_angles=None).detector.config == stored
