"""Accuracy: the champion against dlib's 68-point predictor on the same held-out faces, given the same boxes.

Faces: the ``test`` split of ``data/interim/annotations.parquet`` (assigned by photo by the ``download``
stage; 300-W: AFW + HELEN-train faces, InfAnFace: its Train release), per data set.

Boxes (both methods get the same box information per face; two protocols):

* ``detector``: the MTCNN box matched to the face by the ``crop`` stage (``det_box`` of
  ``data/interim/crops.parquet``), i.e. what the product sees; where MTCNN missed the face the crop stage's
  landmark-derived fallback box stands in (counted as ``fallbacks``). Ours cuts its crop from that box exactly
  as inference does; dlib gets the same box mapped into its HOG detector's convention by a
  :class:`~facelandmarks.baselines.dlib68.BoxConversion` fitted on TRAINING faces (MTCNN box -> HOG box of
  the same face, medians of scale and centre shift).
* ``landmarks``: a box derived from the annotated landmarks only (isolates the landmark model from the
  detector): ours gets the box of the evaluation stage's ``crops`` protocol
  (:func:`facelandmarks.evaluate.protocols.annotated_boxes`: the landmark box scaled and shifted by the
  ``crop.fallback`` stored with the model), dlib the landmark box mapped to HOG's convention by a conversion
  fitted on training faces.

Our predictions go through the product's own path, :meth:`FaceLandmarker.landmarks_in_boxes` (crop with the
model's stored crop settings, network, map back to photo pixels).

Besides, ``dlib_native`` runs dlib as its users do (its own HOG detections, matched to the annotated face)
and reports how many test faces HOG finds and both methods' NME on those faces (ours with its detector box).

Metrics per face: NME normalised by the inter-ocular distance (outer eye corners 36, 45; 300-W protocol,
Sagonas et al. IVC 2016) over visible points (:func:`facelandmarks.metrics.nme.nme`); per set: mean and
median NME, failure rate and AUC of the CED curve at 0.08 and 0.10 (the evaluation stage's functions).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from facelandmarks.baselines.dlib68 import BoxConversion, DlibLandmarker
from facelandmarks.crop.config import FallbackConfig
from facelandmarks.crop.stage import CropParams, crop_faces
from facelandmarks.data.table import landmarks_bbox, read_table, stack_column
from facelandmarks.detect.matching import match_boxes
from facelandmarks.evaluate.protocols import annotated_boxes
from facelandmarks.inference.landmarker import FaceLandmarker
from facelandmarks.io.photos import iter_photo_images
from facelandmarks.metrics.ced import auc, failure_rate
from facelandmarks.metrics.nme import nme, normaliser
from facelandmarks.schemes import get_scheme

__all__ = [
    "THRESHOLDS",
    "AccuracyOptions",
    "face_boxes",
    "hog_matches",
    "calibrate_dlib_boxes",
    "summarise",
    "run_accuracy",
]

log = logging.getLogger(__name__)

#: NME thresholds of the failure rate and the CED AUC.
THRESHOLDS = (0.08, 0.10)
PROTOCOLS = ("detector", "landmarks")


@dataclass
class AccuracyOptions:
    """Settings of the accuracy benchmark.

    Attributes:
        annotations: the annotation table (``download`` stage).
        crops_table: ``crops.parquet`` of the ``crop`` stage (MTCNN boxes); when it is missing or lacks a
            face, the crop stage's own code detects those faces again.
        split: the held-out split compared on.
        calibration_faces: training faces used to fit the box conversions for dlib (random, seeded).
        hog_upsample: dlib HOG detector upsampling (1 = ``face_recognition``'s default).
        batch_size: faces per forward pass of our model.
        max_faces: evaluate at most this many faces per data set (0 = all; for quick trial runs).
        seed: sampling seed.
    """

    annotations: Path = Path("data/interim/annotations.parquet")
    crops_table: Path = Path("data/interim/crops.parquet")
    split: str = "test"
    calibration_faces: int = 200
    hog_upsample: int = 1
    batch_size: int = 64
    max_faces: int = 0
    seed: int = 42


def face_boxes(faces: pd.DataFrame, crops_table: Path | None, crop_params: CropParams) -> pd.DataFrame:
    """The MTCNN box of each face, as the ``crop`` stage matched it.

    Args:
        faces: annotation rows.
        crops_table: ``crops.parquet``; used when it holds every face (else None / missing: detect anew with
            :func:`facelandmarks.crop.stage.crop_faces` on these faces' photos, crops written to a temporary
            folder and discarded).
        crop_params: the ``crop`` section (detector, matching IoU, fallback).
    Returns:
        ``faces`` (same order) plus ``det_box (4,) float32`` and ``det_source`` (``mtcnn`` / ``landmarks``);
        faces the crop stage skipped (unreadable photo) are dropped.
    """
    cols = ["face_id", "det_box", "det_source"]
    table = None
    if crops_table is not None and Path(crops_table).is_file():
        table = read_table(crops_table)[cols]
        if not set(faces["face_id"]).issubset(set(table["face_id"])):
            log.warning("%s lacks some faces: detecting them again", crops_table)
            table = None
    if table is None:
        with tempfile.TemporaryDirectory(prefix="bench-crops-") as tmp:
            table, _ = crop_faces(faces, crop_params, out_dir=tmp, progress=False)
            table = table[cols]
    return faces.merge(table, on="face_id", how="inner", validate="one_to_one")


def hog_matches(dlib: DlibLandmarker, image: np.ndarray, landmarks: np.ndarray, min_iou: float) -> np.ndarray:
    """dlib's HOG box of each annotated face of one photo.

    Args:
        dlib: the baseline.
        image: ``(H, W, 3) uint8`` photo.
        landmarks: ``(m, K, 2)`` annotated points of the photo's faces.
        min_iou: IoU with the landmark box that counts as a match (the crop stage's ``match_iou``).
    Returns:
        ``(m, 4) float32`` HOG edge boxes, NaN rows where HOG found no matching face.
    """
    boxes, _ = dlib.detect(image)
    idx, _ = match_boxes(boxes, landmarks_bbox(landmarks), min_iou)
    out = np.full((len(idx), 4), np.nan, np.float32)
    out[idx >= 0] = boxes[idx[idx >= 0]]
    return out


def _photos(faces: pd.DataFrame):
    """Yield ``(positions, image)`` per distinct image (:func:`facelandmarks.io.photos.iter_photo_images`):
    each face is read from its own file (HELEN keeps one per face; AFW copies are byte-identical and share
    one image). ``positions`` are row positions in ``faces``; ``image`` is None when unreadable (logged)."""
    for photo in iter_photo_images(faces):
        if photo.image is None:
            log.warning("accuracy: skipping %s: %s", photo.paths[0], photo.error)
        yield [faces.index.get_loc(i) for i in photo.faces.index], photo.image


def calibrate_dlib_boxes(
    faces: pd.DataFrame, dlib: DlibLandmarker, min_iou: float, progress: bool = False
) -> dict:
    """Fit the conversions into dlib's HOG box convention on training faces.

    Args:
        faces: training rows with ``det_box``/``det_source`` (:func:`face_boxes`).
        dlib: the baseline (its HOG detector gives the target boxes).
        min_iou: HOG box <-> landmark box matching IoU.
    Returns:
        ``{"detector": BoxConversion (MTCNN box -> HOG box, faces MTCNN found), "landmarks": BoxConversion
        (landmark box -> HOG box), "faces": n, "hog_found": n}``.
    Raises:
        ValueError: HOG (or HOG and MTCNN) found none of the faces (nothing to fit on).
    """
    faces = faces.reset_index(drop=True)
    hog = np.full((len(faces), 4), np.nan, np.float32)
    photos = _photos(faces)
    for positions, image in tqdm(photos, total=faces["image_path"].nunique(), desc="calibrate dlib boxes",
                                 disable=not progress):
        if image is None:
            continue
        pts = stack_column(faces.iloc[positions])
        hog[positions] = hog_matches(dlib, image, pts, min_iou)
    found = np.isfinite(hog).all(axis=1)
    if not found.any():
        raise ValueError("calibrate_dlib_boxes: dlib's HOG detector found none of the calibration faces")
    mtcnn = found & (faces["det_source"].to_numpy() == "mtcnn")
    if not mtcnn.any():
        raise ValueError("calibrate_dlib_boxes: no calibration face was found by both MTCNN and dlib's HOG detector")
    det = stack_column(faces, "det_box")
    lmk = landmarks_bbox(stack_column(faces))
    return {
        "detector": BoxConversion.fit(det[mtcnn], hog[mtcnn]),
        "landmarks": BoxConversion.fit(lmk[found], hog[found]),
        "faces": int(len(faces)),
        "hog_found": int(found.sum()),
    }


def summarise(values: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS) -> dict:
    """Per-set figures from per-face NME.

    Args:
        values: ``(N,)`` NME per face (fractions; NaN faces are left out).
    Returns:
        ``{"faces", "nme", "nme_median", "fr@T", "auc@T" for each threshold T}``: NME as fractions, failure
        rate = share of faces with NME > T, AUC = area under the CED curve up to T divided by T (0..1).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    out: dict = {"faces": int(len(v)), "nme": float(v.mean()) if len(v) else None,
                 "nme_median": float(np.median(v)) if len(v) else None}
    for t in thresholds:
        out[f"fr@{t:.2f}"] = float(failure_rate(v, t)) if len(v) else None
        out[f"auc@{t:.2f}"] = float(auc(v, t)) if len(v) else None
    return out


def _per_face_nme(pred: np.ndarray, faces: pd.DataFrame, scheme) -> np.ndarray:
    gt = stack_column(faces)
    return nme(pred, gt, normaliser(gt, scheme, "inter_ocular"), stack_column(faces, "visible"))


def run_accuracy(
    model_path: Path,
    params: dict,
    options: AccuracyOptions | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """The whole accuracy comparison.

    Args:
        model_path: our checkpoint (``models/finetune/model.pt``, the champion).
        params: the loaded params.yaml (``crop`` section: detector, matching, fallback; ``scheme``).
        options: :class:`AccuracyOptions`.
        device: where our model runs (accuracy does not depend on it).
    Returns:
        JSON-able dict: ``protocols`` (per protocol, per data set: ``ours`` and ``dlib`` summaries, plus
        ``per_subset``), ``dlib_native``, ``calibration``, ``faces`` per data set, ``fallbacks`` per data set,
        ``seconds``.
    Raises:
        FileNotFoundError: annotation table or checkpoint missing.
    """
    opts = options or AccuracyOptions()
    t0 = time.perf_counter()
    scheme = get_scheme(params.get("scheme", "ibug68"))
    crop_params = CropParams.model_validate(params.get("crop") or {})
    ours = FaceLandmarker.load(model_path, device=device, batch_size=opts.batch_size)
    dlib = DlibLandmarker(upsample=opts.hog_upsample)

    table = read_table(opts.annotations)
    test = table[table["split"] == opts.split]
    if opts.max_faces:
        test = test.groupby("dataset", group_keys=False).head(opts.max_faces)
    rng = np.random.default_rng(opts.seed)
    train = table[table["split"] == "train"]
    if opts.calibration_faces and len(train) > opts.calibration_faces:
        train = train.iloc[np.sort(rng.choice(len(train), opts.calibration_faces, replace=False))]
    boxed = face_boxes(pd.concat([test, train]), opts.crops_table, crop_params)
    test = boxed[boxed["face_id"].isin(test["face_id"])].reset_index(drop=True)
    train = boxed[boxed["face_id"].isin(train["face_id"])].reset_index(drop=True)
    calib = calibrate_dlib_boxes(train, dlib, crop_params.match_iou, progress=progress)

    n = len(test)
    k = scheme.num_points
    det = stack_column(test, "det_box")
    gt = stack_column(test)
    boxes_ours = {"detector": det, "landmarks": annotated_boxes(gt, ours)}
    boxes_dlib = {"detector": calib["detector"].apply(det), "landmarks": calib["landmarks"].apply(landmarks_bbox(gt))}
    pred_ours = {p: np.full((n, k, 2), np.nan, np.float32) for p in PROTOCOLS}
    pred_dlib = {p: np.full((n, k, 2), np.nan, np.float32) for p in PROTOCOLS}
    hog = np.full((n, 4), np.nan, np.float32)
    pred_native = np.full((n, k, 2), np.nan, np.float32)
    readable = np.zeros(n, bool)
    for positions, image in tqdm(_photos(test), total=test["image_path"].nunique(), desc="accuracy",
                                 disable=not progress):
        if image is None:
            continue
        readable[positions] = True
        for p in PROTOCOLS:
            pred_ours[p][positions] = ours.landmarks_in_boxes(image, boxes_ours[p][positions])
            pred_dlib[p][positions] = dlib.landmarks(image, boxes_dlib[p][positions])
        hog[positions] = hog_matches(dlib, image, gt[positions], crop_params.match_iou)
        for pos in positions:  # dlib as its users run it: its own HOG box
            if np.isfinite(hog[pos]).all():
                pred_native[pos] = dlib.landmarks(image, hog[pos][None])[0]
    found = np.isfinite(hog).all(axis=1) & readable
    nme_ours = {p: _per_face_nme(pred_ours[p], test, scheme) for p in PROTOCOLS}
    nme_dlib = {p: _per_face_nme(pred_dlib[p], test, scheme) for p in PROTOCOLS}
    nme_native = _per_face_nme(np.where(np.isfinite(pred_native), pred_native, 0.0), test, scheme)
    for arr in (*nme_ours.values(), *nme_dlib.values()):
        arr[~readable] = np.nan
    nme_native[~found] = np.nan

    result: dict = {"split": opts.split, "faces": {}, "fallbacks": {}, "protocols": {p: {} for p in PROTOCOLS},
                    "dlib_native": {}}
    for ds, g in test.groupby("dataset", sort=True):
        m = test.index.isin(g.index)
        result["faces"][ds] = int(len(g))
        result["fallbacks"][ds] = int((g["det_source"] != "mtcnn").sum())
        for p in PROTOCOLS:
            entry = {"ours": summarise(nme_ours[p][m]), "dlib": summarise(nme_dlib[p][m]), "per_subset": {}}
            for sub_name, gs in g.groupby("subset", sort=True):
                ms = test.index.isin(gs.index)
                entry["per_subset"][sub_name] = {"ours": summarise(nme_ours[p][ms]), "dlib": summarise(nme_dlib[p][ms])}
            result["protocols"][p][ds] = entry
        mf = m & found
        result["dlib_native"][ds] = {
            "hog_found": int(mf.sum()),
            "faces": int(m.sum()),
            "ours": summarise(nme_ours["detector"][mf]),
            "dlib": summarise(nme_native[mf]),
        }
    result["calibration"] = {
        "split": "train",
        "faces": calib["faces"],
        "hog_found": calib["hog_found"],
        "detector_to_hog": asdict(calib["detector"]),
        "landmarks_to_hog": asdict(calib["landmarks"]),
        "ours_landmark_box": FallbackConfig.model_validate((ours.config.crop or {}).get("fallback") or {}).model_dump(),
    }
    result["model"] = {"backbone": ours.config.backbone, "head": ours.config.head, "input_size": ours.config.input_size}
    result["dlib"] = {"predictor": dlib.path.name, "hog_upsample": dlib.upsample}
    result["seconds"] = time.perf_counter() - t0
    return result
