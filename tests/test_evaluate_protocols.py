"""Known answers pushed through the real evaluate path (photo reading, MTCNN, matching, NME, failure rate).

An oracle predictor returns the annotation of the face it is shown, looked up by the pixels of the image
it receives. Its lookup table is built by reading each face's OWN file with OpenCV, independently of the
project's photo reader: if evaluate fed a face another face's image (the HELEN bug: one file per face of
a photo), the oracle would not find that face there and its NME would not be 0.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest

from facelandmarks.crop.config import FallbackConfig
from facelandmarks.data.table import landmarks_bbox
from facelandmarks.detect.matching import box_iou
from facelandmarks.detect.mtcnn import DetectorConfig, FaceDetector
from facelandmarks.evaluate.protocols import ModelRun, predict_faces
from facelandmarks.evaluate.summary import face_errors, metrics_tree
from facelandmarks.inference.landmarker import Face
from facelandmarks.schemes import IBUG68


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class OracleLandmarker:
    """Returns the annotated landmarks (+ ``shift`` pixels) of the face it is shown; NaN when the image
    it is given does not hold that face."""

    def __init__(self, faces: pd.DataFrame, detector: FaceDetector, shift=(0.0, 0.0)):
        self.config = SimpleNamespace(crop={"fallback": FallbackConfig().model_dump()})
        self.detector = detector
        self.shift = np.asarray(shift, np.float32)
        self.by_image: dict[str, list[np.ndarray]] = {}
        for row in faces.itertuples():
            bgr = cv2.imread(row.image_path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            self.by_image.setdefault(_key(bgr[:, :, ::-1]), []).append(np.asarray(row.landmarks, np.float32))

    def _lookup(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        cands = self.by_image.get(_key(image), [])
        if not cands:
            return np.full((68, 2), np.nan, np.float32)
        ious = [box_iou(np.asarray(box)[None], landmarks_bbox(c)[None])[0, 0] for c in cands]
        return cands[int(np.argmax(ious))] + self.shift

    def landmarks_in_boxes(self, image, boxes):
        return np.stack([self._lookup(image, b) for b in boxes]) if len(boxes) else np.zeros((0, 68, 2), np.float32)

    def landmarks_in_photo_boxes(self, images, boxes):  # each photo's boxes looked up in that photo only
        return [self.landmarks_in_boxes(img, b) for img, b in zip(images, boxes, strict=True)]

    def faces_from_detections(self, images, detections):
        return [[Face(box=b, score=float(s), landmarks=self._lookup(img, b)) for b, s in zip(d.boxes, d.scores)]
                for img, d in zip(images, detections)]


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(DetectorConfig(device="cpu"))


def _photo_sets(df: pd.DataFrame) -> pd.DataFrame:
    """Two HELEN photos whose faces live in different files, and one AFW photo with several faces."""
    w = df[df["dataset"] == "300w"]
    files = w.groupby("photo_id")["image_path"].nunique()
    helen = [p for p in files[files > 1].index if (w.loc[w["photo_id"] == p, "subset"] == "helen").all()][:2]
    counts = w[w["subset"] == "afw"].groupby("photo_id").size()
    afw = list(counts[counts > 1].index[:1])
    assert len(helen) == 2 and len(afw) == 1, "the real table must hold multi-file HELEN and multi-face AFW photos"
    return w[w["photo_id"].isin(helen + afw)].reset_index(drop=True)


def _run(faces, oracle, protocols=("crops", "end_to_end")):
    runs = [ModelRun("oracle", oracle, set(faces["face_id"]))]
    preds, problems = predict_faces(faces, runs, list(protocols), match_iou=0.3, batch_photos=2, progress=False)
    assert problems == []
    return preds


@pytest.mark.slow
def test_perfect_predictor_scores_zero_on_multi_file_helen_and_afw(annotations, detector):
    faces = _photo_sets(annotations[0])
    preds = _run(faces, OracleLandmarker(faces, detector))
    for protocol in ("crops", "end_to_end"):
        err = face_errors(faces, preds[("oracle", protocol)], IBUG68, ["inter_ocular"], set(faces["face_id"]))
        assert len(err) == len(faces)
        assert (err["nme_inter_ocular"] == 0).all(), err[["face_id", "image_path", "nme_inter_ocular"]]
    e2e = preds[("oracle", "end_to_end")]
    # MTCNN finds these frontal adult faces: every one detected, none scored on a sibling's file
    assert e2e.missed == set() and len(e2e.det_iou) == len(faces)


@pytest.mark.slow
def test_a_shift_of_k_pixels_gives_the_hand_computed_nme(annotations, detector):
    faces = _photo_sets(annotations[0])
    preds = _run(faces, OracleLandmarker(faces, detector, shift=(3.0, 4.0)), protocols=("crops",))
    err = face_errors(faces, preds[("oracle", "crops")], IBUG68, ["inter_ocular"], set(faces["face_id"]))
    # every point 5 px away (3-4-5): NME = 5 / |p36 - p45| (300-W inter-ocular normalisation, outer eye corners)
    expected = [5.0 / float(np.linalg.norm(np.float64(v[36]) - np.float64(v[45]))) for v in err["face_id"].map(
        dict(zip(faces["face_id"], faces["landmarks"])))]
    np.testing.assert_allclose(err["nme_inter_ocular"].to_numpy(), expected, rtol=1e-6)


@pytest.mark.slow
def test_a_face_the_detector_misses_is_a_failure_in_the_all_faces_row(annotations, detector):
    faces = _photo_sets(annotations[0])
    afw = faces[faces["subset"] == "afw"].reset_index(drop=True)
    img = cv2.imread(afw["image_path"].iloc[0])
    h, w = img.shape[:2]
    # an annotated "face" on an empty strip of the photo: a small copy of a real face's shape, where MTCNN finds none
    src = np.asarray(afw["landmarks"].iloc[0], np.float32)
    small = (src - src.min(0)) * (0.15 * min(h, w) / np.ptp(src, axis=0).max())
    dets = detector.detect([img[:, :, ::-1].copy()])[0]
    placed = None
    for x0 in np.linspace(2, w - small[:, 0].max() - 3, 12):
        for y0 in np.linspace(2, h - small[:, 1].max() - 3, 12):
            cand = small + np.array([x0, y0], np.float32)
            if not len(dets.boxes) or box_iou(dets.boxes, landmarks_bbox(cand)[None]).max() == 0:
                placed = cand
                break
        if placed is not None:
            break
    assert placed is not None
    ghost = afw.iloc[[0]].copy()
    ghost["face_id"] = "ghost"
    ghost["landmarks"] = [placed]
    faces = pd.concat([afw, ghost], ignore_index=True)
    preds = _run(faces, OracleLandmarker(faces, detector), protocols=("end_to_end",))
    assert preds[("oracle", "end_to_end")].missed == {"ghost"}
    err = face_errors(faces, preds[("oracle", "end_to_end")], IBUG68, ["inter_ocular"], set(faces["face_id"]))
    tree = metrics_tree({("oracle", "end_to_end"): err}, ["inter_ocular"], "inter_ocular", [0.08], [])
    row = tree["oracle"]["end_to_end"]["300w"][afw["split"].iloc[0]]["all"]
    n = len(faces)
    assert row["faces"] == n and row["faces_detected"] == n - 1
    assert row["detected"] == pytest.approx((n - 1) / n, abs=1e-5)
    assert row["failure_rate_08"] == pytest.approx(1 / n, abs=1e-5)  # the miss fails at every threshold
    assert row["auc_08"] == pytest.approx((n - 1) / n, abs=1e-5)
    # the mean NME is over ALL faces: the miss is scored from its fallback box (the oracle is exact there too)
    assert row["nme_inter_ocular"] == 0.0 and row["nme_inter_ocular_detected"] == 0.0


def test_end_to_end_evaluation_detects_faces_as_the_service_does():
    """The end-to-end rows measure the product: the same MTCNN score floor and detection size as `serve`."""
    from facelandmarks.evaluate.config import EvaluateParams
    from facelandmarks.params import load_params, section
    from facelandmarks.serving.config import ServeParams

    params = load_params("params.yaml")
    ev = section(params, "evaluate", EvaluateParams)
    sv = section(params, "serve", ServeParams)
    assert ev.detector_min_score == sv.detect_min_score
    assert (ev.detector_max_side or 0) == (sv.detect_max_side or 0)
    assert ev.detector_rotate_angles == sv.detect_rotate_angles
