"""FaceVerifier: MTCNN's O-net on a tracker's boxes, checked against MTCNN's own scores on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from facelandmarks.detect.mtcnn import DetectorConfig, FaceDetector
from facelandmarks.io.images import read_image
from facelandmarks.video.verify import FaceVerifier

pytestmark = pytest.mark.needs_data


@pytest.fixture(scope="module")
def photos(raw_dir):
    """Four real HELEN photos and the demo photo with several faces."""
    stems = sorted((raw_dir / "300w" / "helen_train").glob("*.pts"))[:4]
    return [read_image(s.with_suffix(".jpg")) for s in stems] + [read_image(raw_dir / "demo" / "images" / "facenet_pytorch__multiface.jpg")]


def test_on_mtcnns_own_boxes_it_gives_mtcnns_scores_and_low_scores_off_the_face(photos):
    """On MTCNN's own confident boxes the O-net sees a face too (>= 0.9, and within 0.05 of MTCNN's score: the
    same network, but MTCNN scored the box before its last regression, and resized with torch, not OpenCV); a
    box moved one side to the right of a face, or a box on a blank patch, scores low; a box beyond the image
    or degenerate scores 0."""
    import torch

    torch.set_num_threads(1)
    detector = FaceDetector(DetectorConfig(device="cpu", max_side=0))
    verifier = FaceVerifier("cpu")
    checked = 0
    for img in photos:
        d = detector.detect([img])[0]
        got = verifier.face_scores(img, d.boxes)
        assert got.shape == (len(d),) and got.dtype == np.float32
        confident = d.scores >= 0.9
        assert np.all(got[confident] >= 0.9)
        np.testing.assert_allclose(got[confident], d.scores[confident], atol=0.05)
        checked += int(confident.sum())
        side = d.boxes[0, 2] - d.boxes[0, 0]
        moved = d.boxes[:1] + np.array([side, 0, side, 0], np.float32)
        assert verifier.face_scores(img, moved)[0] < 0.5
    assert checked >= 6  # HELEN's faces and several of the demo photo's
    grey = np.full((200, 200, 3), 128, np.uint8)
    assert verifier.face_scores(grey, np.array([[50.0, 50.0, 150.0, 150.0]]))[0] < 0.5
    h, w = photos[0].shape[:2]
    nothing = np.array([[w + 10.0, h + 10.0, w + 60.0, h + 60.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, np.nan, 9.0]])
    assert verifier.face_scores(photos[0], nothing).tolist() == [0.0, 0.0, 0.0]
    assert verifier.face_scores(photos[0], np.zeros((0, 4))).shape == (0,)
    shared = FaceVerifier.shared("cpu")  # the process's one (the service's trackers share it): same scores
    assert shared is FaceVerifier.shared("cpu")
    np.testing.assert_array_equal(shared.face_scores(photos[0], d.boxes), verifier.face_scores(photos[0], d.boxes))
    with pytest.raises(ValueError, match="uint8"):
        verifier.face_scores(np.zeros((10, 10), np.uint8), nothing)
