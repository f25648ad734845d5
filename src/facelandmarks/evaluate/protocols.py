"""The two evaluation protocols: where the face box comes from before the model sees the face.

* ``crops`` (the literature's protocol, e.g. 300-W, Sagonas et al. IVC 2016): the face is cut from a box
  derived from its ANNOTATION, so detection plays no part. The box is the MTCNN-like box the model's
  own crop settings derive from the landmark box (``crop.fallback`` stored in the checkpoint:
  :func:`facelandmarks.crop.faces.fallback_box`), so the crop frames the face as the training crops did.
* ``end_to_end`` (the product's own path): :class:`facelandmarks.inference.FaceLandmarker` on the whole
  photo: MTCNN once per photo, the model on every detection. Each annotated face is matched to one
  detection by IoU with its landmark box (greedy, one-to-one, ``match_iou``). A face without a matching
  detection is MISSED: it counts as a failure at every threshold and adds nothing to the AUC, and its
  NME is taken from the model run on the landmark-derived fallback box (as in ``crops``), so that the
  headline mean NME is over ALL annotated faces (a mean over detected faces only would hide the hardest
  faces: survivor bias). Detections that match no annotated face (unannotated people, false positives)
  are not scored.

Every face is read from its own image file (:func:`facelandmarks.io.photos.iter_photo_images`): HELEN
keeps a different file per face of a photo, AFW byte-identical copies.

Predictions are in photo pixels, so NME is measured in the photo's own frame for both protocols.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from facelandmarks.crop.config import FallbackConfig
from facelandmarks.crop.faces import fallback_box
from facelandmarks.data.table import landmarks_bbox
from facelandmarks.detect.matching import match_boxes
from facelandmarks.inference.landmarker import FaceLandmarker
from facelandmarks.io.photos import iter_photo_images

__all__ = ["ModelRun", "Predictions", "annotated_boxes", "predict_faces"]

log = logging.getLogger(__name__)


@dataclass
class ModelRun:
    """One model to evaluate and the faces it is evaluated on.

    Attributes:
        name: e.g. ``finetune``.
        landmarker: the predictor.
        face_ids: ids of the annotated faces it predicts (its data sets and splits).
    """

    name: str
    landmarker: FaceLandmarker
    face_ids: set[str]


@dataclass
class Predictions:
    """Predictions of one model under one protocol.

    Attributes:
        landmarks: face_id -> ``(K, 2) float32`` photo pixels, for every predicted face; in end to end, a
            missed face's entry is the prediction from its landmark-derived fallback box.
        det_iou: face_id -> IoU of the matched detection with the landmark box (end to end only).
        missed: face_ids without a matching detection (end to end only); they are failures at every
            threshold whatever their fallback NME.
    """

    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    det_iou: dict[str, float] = field(default_factory=dict)
    missed: set[str] = field(default_factory=set)


def annotated_boxes(landmarks: np.ndarray, landmarker: FaceLandmarker) -> np.ndarray:
    """MTCNN-like boxes from annotated landmarks, with the model's stored calibration (``crop.fallback``).

    Args:
        landmarks: ``(n, K, 2)`` annotated points, photo pixels.
        landmarker: its ``config.crop["fallback"]`` (defaults when absent) gives scale and offset.
    Returns:
        ``(n, 4) float32`` boxes x0, y0, x1, y1.
    """
    fb = FallbackConfig.model_validate((landmarker.config.crop or {}).get("fallback") or {})
    return np.stack([fallback_box(lm, fb) for lm in np.asarray(landmarks)]).astype(np.float32)


def predict_faces(
    faces: pd.DataFrame,
    runs: list[ModelRun],
    protocols: list[str],
    match_iou: float = 0.3,
    batch_photos: int = 8,
    progress: bool = True,
) -> tuple[dict[tuple[str, str], Predictions], list[dict]]:
    """Predict every annotated face with every model under every protocol.

    Each distinct image is read once and, for ``end_to_end``, detected once (the detector of the first
    model is used for all, so models are compared on the same detections). Each face is predicted on the
    image file it was annotated on; the crops of the ``batch_photos`` photos detected together go through
    each model in one batch.

    Args:
        faces: annotation rows (``face_id``, ``photo_id``, ``image_path``, ``landmarks``).
        runs: the models and the faces each one predicts.
        protocols: ``crops`` and/or ``end_to_end``.
        match_iou: smallest IoU of a detection with a landmark box that counts as that face.
        batch_photos: images per MTCNN pass (an unreadable one counts, so the batches depend on the table alone).
        progress: show a tqdm bar.
    Returns:
        ``({(model, protocol): Predictions}, problems)``; problems list unreadable image files
        (``{"photo_id", "faces", "reason", "detail"}``), whose faces are left out of every result and
        counted in ``faces_skipped``.
    Raises:
        ValueError: an unknown protocol.
    """
    unknown = set(protocols) - {"crops", "end_to_end"}
    if unknown:
        raise ValueError(f"unknown evaluation protocols {sorted(unknown)}; use crops, end_to_end")
    out = {(r.name, p): Predictions() for r in runs for p in protocols}
    problems: list[dict] = []
    wanted = set().union(*(r.face_ids for r in runs)) if runs else set()
    faces = faces[faces["face_id"].isin(wanted)]
    detector = runs[0].landmarker.detector if runs else None
    bar = tqdm(total=len(faces), desc="evaluate", unit="face", disable=not progress)
    photos = iter_photo_images(faces.sort_values("photo_id", kind="stable"), workers=1, prefetch=batch_photos)
    while True:
        loaded, images = [], 0
        for photo in photos:  # the next batch_photos images; an unreadable one keeps its slot (batches never shift)
            images += 1
            if photo.image is None:
                log.warning("evaluate: skipping %s (%d faces): %s", photo.paths[0], len(photo.faces), photo.error)
                problems.append({"photo_id": photo.photo_id, "faces": len(photo.faces), "reason": "unreadable",
                                 "detail": photo.error})
                bar.update(len(photo.faces))
            else:
                loaded.append((photo.faces, photo.image))
            if images >= batch_photos:
                break
        if not images:
            break
        if not loaded:
            continue
        bar.update(sum(len(g) for g, _ in loaded))
        dets = detector.detect([img for _, img in loaded]) if "end_to_end" in protocols else None
        for run in runs:
            # each loaded photo's faces this model predicts (a set lookup: pandas' isin on a large set costs ~1 ms a call)
            mine = [(g[[f in run.face_ids for f in g["face_id"]]], img) for g, img in loaded]
            idx = [i for i, (g, _) in enumerate(mine) if len(g)]
            if not idx:
                continue
            gts = {i: np.stack(mine[i][0]["landmarks"].to_numpy()) for i in idx}
            if "crops" in protocols:  # every face of the loaded photos in one batch
                res = out[(run.name, "crops")]
                preds = run.landmarker.landmarks_in_photo_boxes([mine[i][1] for i in idx],
                                                                [annotated_boxes(gts[i], run.landmarker) for i in idx])
                for i, pred in zip(idx, preds):
                    res.landmarks.update(zip(mine[i][0]["face_id"], pred))
            if "end_to_end" in protocols:
                res = out[(run.name, "end_to_end")]
                found = run.landmarker.faces_from_detections([mine[i][1] for i in idx], [dets[i] for i in idx])
                missed_photos, missed_ids, missed_boxes = [], [], []
                for i, found_faces in zip(idx, found):
                    g, img = mine[i]
                    gt = gts[i]
                    boxes = np.stack([f.box for f in found_faces]) if found_faces else np.zeros((0, 4), np.float32)
                    match, ious = match_boxes(boxes, landmarks_bbox(gt), match_iou)
                    for face_id, j, iou in zip(g["face_id"], match, ious):
                        if j >= 0:
                            res.landmarks[face_id] = found_faces[j].landmarks
                            res.det_iou[face_id] = float(iou)
                        else:
                            res.missed.add(face_id)
                    miss = np.flatnonzero(np.asarray(match) < 0)
                    if len(miss):
                        missed_photos.append(img)
                        missed_ids.append(g["face_id"].iloc[miss])
                        missed_boxes.append(annotated_boxes(gt[miss], run.landmarker))
                if missed_photos:  # missed faces: the model on their fallback boxes, one batch
                    for ids, pred in zip(missed_ids, run.landmarker.landmarks_in_photo_boxes(missed_photos, missed_boxes)):
                        res.landmarks.update(zip(ids, pred))
    bar.close()
    return out, problems
