"""The crop stage on real faces: matching, fallbacks, exact geometry, the shared inference path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from facelandmarks.crop.faces import crop_face, fallback_box, find_faces
from facelandmarks.crop.geometry import invert_affine, map_points
from facelandmarks.crop.stage import CropParams
from facelandmarks.data.table import read_table, write_table
from facelandmarks.detect.mtcnn import FaceDetector
from facelandmarks.io.images import read_image
from facelandmarks.params import load_params, section

STAGE = "crop"


@pytest.fixture(scope="module")
def params() -> CropParams:
    return section(load_params("params.yaml"), "crop", CropParams)


def test_every_face_is_cropped_with_the_contract_columns(small_crops, crop_subset, params):
    crops, report, _ = small_crops
    assert sorted(crops["face_id"]) == sorted(crop_subset["face_id"])
    S = params.size
    for _, r in crops.iterrows():
        img = read_image(r["crop_path"])
        assert img.shape == (S, S, 3)
        assert r["crop_landmarks"].dtype == np.float32 and r["crop_landmarks"].shape == (68, 2)
        assert r["crop_to_photo"].dtype == np.float64 and r["crop_to_photo"].shape == (2, 3)
        assert r["det_box"].dtype == np.float32 and r["det_box"].shape == (4,)
        assert r["det_source"] in ("mtcnn", "landmarks")
        if r["det_source"] == "mtcnn":
            assert r["det_iou"] >= params.match_iou and 0 < r["det_score"] <= 1
        else:
            assert np.isnan(r["det_iou"]) and np.isnan(r["det_score"])
    # the 300-W faces of this subset are all found by MTCNN
    assert (crops.loc[crops["dataset"] == "300w", "det_source"] == "mtcnn").all()
    assert report["datasets"]["300w"]["detection_rate"] == 1.0
    assert report["cropped"] == len(crop_subset)


def test_crop_landmarks_map_back_to_the_photo_within_1e3_px(small_crops):
    crops, _, _ = small_crops
    for _, r in crops.iterrows():
        back = map_points(r["crop_landmarks"], r["crop_to_photo"])
        assert np.abs(back - r["landmarks"]).max() < 1e-3, r["face_id"]


def test_same_photo_files_are_decoded_once(small_crops, crop_subset):
    """AFW's per-face copies of a photo are byte-identical: one decode and one detection per photo."""
    _, report, _ = small_crops
    afw = crop_subset[crop_subset["subset"] == "afw"]
    other = crop_subset[crop_subset["subset"] != "afw"]
    assert afw["image_path"].nunique() > afw["photo_id"].nunique()
    assert report["images_decoded"] == afw["photo_id"].nunique() + other["image_path"].nunique()


def test_inference_path_cuts_the_same_crop_as_the_stage(small_crops, params):
    """find_faces (what serving calls) on a photo gives the stage's crop pixel for pixel."""
    crops, _, _ = small_crops
    r = crops[(crops["subset"] == "helen") & (crops["det_source"] == "mtcnn")].iloc[0]
    det = FaceDetector(params.detector.model_copy(update={"device": "cpu"}))
    faces = find_faces(det, read_image(r["image_path"]), params.crop_config())
    assert faces, "no face found"
    best = min(faces, key=lambda f: np.abs(f.box - r["det_box"]).max())
    np.testing.assert_allclose(best.box, r["det_box"], atol=1e-3)
    np.testing.assert_allclose(best.crop_to_photo, r["crop_to_photo"], atol=1e-6)
    assert np.array_equal(best.crop, read_image(r["crop_path"]))


def test_fallback_box_frames_faces_like_mtcnn(small_crops, params):
    """For faces MTCNN found, the landmark-derived fallback crop puts the landmarks about where the
    MTCNN crop does (same centre and size on the median; a rotated or turned face differs more)."""
    crops, _, _ = small_crops
    found = crops[crops["det_source"] == "mtcnn"]
    assert len(found) >= 10
    S = params.size
    cfg = params.crop_config()
    centre_err, size_ratio = [], []
    for _, r in found.iterrows():
        fb = fallback_box(r["landmarks"], params.fallback)
        p2c = invert_affine(crop_face(np.zeros((8, 8, 3), np.uint8), fb, cfg)[1])
        pts_fb = map_points(r["landmarks"], p2c)
        pts_det = r["crop_landmarks"]
        centre_err.append(np.linalg.norm(pts_fb.mean(0) - pts_det.mean(0)) / S)
        size_ratio.append(np.ptp(pts_fb, axis=0).max() / np.ptp(pts_det, axis=0).max())
    assert np.median(centre_err) < 0.05
    assert np.percentile(centre_err, 90) < 0.15
    assert 0.9 < np.median(size_ratio) < 1.1
    assert np.all((np.array(size_ratio) > 0.6) & (np.array(size_ratio) < 1.6))


@pytest.mark.slow
def test_stage_main_skips_unreadable_photos_and_unusable_faces(crop_subset, tmp_path, stage_params_file, stage_logged_to_mlflow):
    """main(): a broken photo and a face with collapsed landmarks are counted and skipped, not fatal."""
    good = crop_subset[crop_subset["subset"].isin(["helen", "ads"])].head(3)
    broken_file = tmp_path / "broken.jpg"
    broken_file.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    broken = good.iloc[[0]].assign(face_id="test/broken_1", photo_id="test/broken", image_path=str(broken_file))
    collapsed = good.iloc[[1]].copy()
    collapsed["face_id"] = "test/collapsed_1"
    collapsed["landmarks"] = [np.full((68, 2), 5.0, np.float32)]
    collapsed["bbox"] = [np.array([5, 5, 5, 5], np.float32)]
    table = pd.concat([good, broken, collapsed]).reset_index(drop=True)
    write_table(table, tmp_path / "annotations.parquet")
    params = load_params("params.yaml")
    params["crop"].update(
        annotations=str(tmp_path / "annotations.parquet"),
        table=str(tmp_path / "crops.parquet"),
        out_dir=str(tmp_path / "crops"),
        report=str(tmp_path / "crop.json"),
        detector={**params["crop"]["detector"], "device": "cpu"},
    )
    stage_params_file(params)

    from facelandmarks.crop.stage import main

    main(str(tmp_path / "params.yaml"))
    crops = read_table(tmp_path / "crops.parquet")
    report = json.loads((tmp_path / "crop.json").read_text())
    assert sorted(crops["face_id"]) == sorted(good["face_id"])
    reasons = sorted(p["reason"] for p in report["problems"])
    assert reasons == ["no_usable_face", "unreadable"]
    skipped = sum(d["faces_skipped"] for d in report["datasets"].values())
    assert skipped == 2
    assert sum(d["photos_unreadable"] for d in report["datasets"].values()) == 1
    for key in ("detection_rate", "mean_iou", "fallbacks"):
        assert key in report["datasets"]["300w"]
    assert report["faces_per_s"] > 0
    # outputs in place, no temporary folders left behind
    assert all((tmp_path / "crops").joinpath(f"{fid}.png").is_file() for fid in crops["face_id"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    stage_logged_to_mlflow(tmp_path, STAGE)
