"""The evaluate stage: both protocols on real annotated faces, metrics per subset, CED plots, MLflow."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from facelandmarks.evaluate.protocols import Predictions
from facelandmarks.evaluate.summary import face_errors, group_metrics, metrics_tree
from facelandmarks.schemes import IBUG68


def _infant_test(annotations, n=6):
    df = annotations[0]
    return df[(df["dataset"] == "infanface") & (df["split"] == "test")].sort_values("face_id").head(n).reset_index(drop=True)


def test_perfect_and_shifted_predictions_give_their_nme(annotations):
    faces = _infant_test(annotations)
    ids = set(faces["face_id"])
    gt = {r.face_id: r.landmarks for r in faces.itertuples()}
    perfect = face_errors(faces, Predictions(landmarks=dict(gt)), IBUG68, ["inter_ocular", "box"], ids)
    assert len(perfect) == len(faces) and (perfect["nme_inter_ocular"] == 0).all() and perfect["found"].all()

    # every point 3 px to the right: inter-ocular NME = 3 / |p36 - p45| for each face
    shifted = Predictions(landmarks={k: v + np.array([3.0, 0.0], np.float32) for k, v in gt.items()})
    err = face_errors(faces, shifted, IBUG68, ["inter_ocular"], ids)
    expected = [3.0 / np.linalg.norm(v[36] - v[45]) for v in faces["landmarks"]]
    np.testing.assert_allclose(err["nme_inter_ocular"], expected, rtol=1e-5)


def test_a_missed_face_fails_and_counts_in_the_all_faces_mean(annotations):
    faces = _infant_test(annotations)
    ids = list(faces["face_id"])
    gt = {r.face_id: r.landmarks for r in faces.itertuples()}
    # the missed face's landmarks come from its fallback box: here 2 px off in x
    landmarks = {k: gt[k] for k in ids[1:]} | {ids[0]: gt[ids[0]] + np.array([2.0, 0.0], np.float32)}
    preds = Predictions(landmarks=landmarks, missed={ids[0]})
    err = face_errors(faces, preds, IBUG68, ["inter_ocular"], set(ids))
    miss = err["face_id"] == ids[0]
    assert not err.loc[miss, "found"].item()
    io0 = float(np.linalg.norm(np.float64(gt[ids[0]][36]) - np.float64(gt[ids[0]][45])))
    assert err.loc[miss, "nme_inter_ocular"].item() == pytest.approx(2.0 / io0, rel=1e-6)
    m = group_metrics(err, ["inter_ocular"], "inter_ocular", [0.08, 0.10], end_to_end=True)
    n = len(ids)
    assert m["faces"] == n and m["faces_detected"] == n - 1 and m["detected"] == pytest.approx((n - 1) / n, abs=1e-5)
    assert m["nme_inter_ocular"] == pytest.approx(2.0 / io0 / n, abs=1e-5)  # over ALL faces
    assert m["nme_inter_ocular_detected"] == 0.0  # beside it, labelled: detected faces only
    assert m["failure_rate_08"] == pytest.approx(1 / n, abs=1e-5)  # the miss fails at every threshold
    assert m["failure_rate_10"] == pytest.approx(1 / n, abs=1e-5)
    assert m["auc_08"] == pytest.approx((n - 1) / n, abs=1e-5)


def test_groups_include_subsets_and_infant_condition_flags(annotations):
    df = annotations[0]
    faces = df[df["split"] == "test"]
    preds = Predictions(landmarks={r.face_id: r.landmarks for r in faces.itertuples()})
    err = face_errors(faces, preds, IBUG68, ["inter_ocular"], set(faces["face_id"]))
    tree = metrics_tree({("m", "crops"): err}, ["inter_ocular"], "inter_ocular", [0.08], ["turned", "occluded", "expressive", "tilted"])
    infant = tree["m"]["crops"]["infanface"]["test"]
    assert {"all", "ads", "google2", "youtube2", "turned", "occluded", "expressive", "tilted"} <= set(infant)
    assert infant["turned"]["faces"] == int(faces.loc[faces["dataset"] == "infanface", "turned"].fillna(False).sum())
    assert {"all", "afw", "helen"} == set(tree["m"]["crops"]["300w"]["test"])  # no flags on 300-W


@pytest.mark.slow
def test_evaluate_stage_writes_metrics_plots_and_mlflow(tiny_checkpoint, annotations, tmp_path, monkeypatch):
    """The real stage (both protocols, two models, real photos) on a few faces of each test split."""
    import mlflow

    from facelandmarks.data.table import write_table
    from facelandmarks.evaluate.stage import main

    table = tmp_path / "annotations.parquet"
    write_table(annotations[0], table)
    out = tmp_path / "reports"
    params = {
        "seed": 0, "scheme": "ibug68",
        "tracking": {"experiment": "evaluate-test", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "artifact_location": str(tmp_path / "mlartifacts")},
        "evaluate": {
            "models": {"finetune": {"checkpoint": str(tiny_checkpoint)},
                       "pretrain": {"checkpoint": str(tiny_checkpoint), "datasets": ["infanface"]}},
            "splits": ["test"], "max_faces": 5, "num_threads": 1, "batch_photos": 4, "device": "cpu",
            "annotations": str(table), "metrics": str(out / "metrics.json"), "plots_dir": str(out / "plots" / "ced"),
            "faces_table": str(out / "faces.csv"), "figure": str(out / "ced.png"), "markdown": str(out / "metrics.md"),
            "demo": {"max_frames": 2, "fps": 2, "max_side": 120, "photo_max_side": 300,
                     "photo_out": str(out / "demo.png"), "gif_out": str(out / "demo.gif")},
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FACELANDMARKS_PARENT_RUN_ID", raising=False)
    main(str(tmp_path / "params.yaml"))

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["finetune"]) == {"crops", "end_to_end"}
    assert set(metrics["finetune"]["crops"]) == set(annotations[0]["dataset"])  # every data set
    assert set(metrics["pretrain"]["crops"]) == {"infanface"}  # the datasets filter of evaluate.models
    for protocol in ("crops", "end_to_end"):
        a = metrics["finetune"][protocol]["infanface"]["test"]["all"]
        assert a["faces"] == 5
        assert all(k in a for k in ("nme_inter_ocular", "nme_inter_pupil", "nme_box", "failure_rate_08", "auc_08",
                                    "failure_rate_10", "auc_10"))
        assert 0 <= a["auc_08"] <= a["auc_10"] <= 1 and 0 <= a["failure_rate_10"] <= a["failure_rate_08"] <= 1
    assert 0 <= metrics["finetune"]["end_to_end"]["300w"]["test"]["all"]["detected"] <= 1
    # same checkpoint under two names: identical numbers on the same faces
    assert metrics["pretrain"]["crops"]["infanface"] == metrics["finetune"]["crops"]["infanface"]

    faces = pd.read_csv(out / "faces.csv")
    n_sets = annotations[0]["dataset"].nunique()
    assert len(faces) == 5 * n_sets * 2 + 5 * 2  # finetune: every data set x 2 protocols; pretrain: infanface x 2
    crops = faces[(faces["model"] == "finetune") & (faces["protocol"] == "crops") & (faces["dataset"] == "infanface")]
    assert crops["nme_inter_ocular"].mean() == pytest.approx(metrics["finetune"]["crops"]["infanface"]["test"]["all"]["nme_inter_ocular"], abs=1e-4)

    curve = pd.read_csv(out / "plots" / "ced" / "finetune_end_to_end_infanface_test.csv")
    assert list(curve.columns) == ["nme", "fraction"] and (curve["fraction"].diff().dropna() >= 0).all()
    assert (out / "ced.png").stat().st_size > 10_000
    table = (out / "metrics.md").read_text()
    assert "| finetune | end to end | infanface | all | 5 |" in table and "| pretrain | crops | infanface | ads |" in table
    with Image.open(out / "demo.png") as im:  # README figures: demo media only
        assert max(im.size) == 300
    with Image.open(out / "demo.gif") as im:
        assert im.n_frames == 2 and max(im.size) == 120

    mlflow.set_tracking_uri(params["tracking"]["tracking_uri"])
    [run] = mlflow.search_runs(experiment_names=["evaluate-test"], filter_string="tags.`facelandmarks.stage` = 'evaluate'",
                               output_format="list")
    logged = run.data.metrics
    assert logged["finetune/crops/infanface/test/all/nme_inter_ocular"] == pytest.approx(
        metrics["finetune"]["crops"]["infanface"]["test"]["all"]["nme_inter_ocular"])


@pytest.mark.slow
def test_a_pool_of_two_processes_predicts_what_one_process_predicts(tiny_checkpoint, crop_subset, tmp_path):
    """``evaluate.workers: 2``: the images go to 2 spawned processes in chunks that keep every MTCNN and model
    batch, so both protocols give bit-identical points, detections and misses; an unreadable photo is a
    problem in both, never fatal. The faces hold AFW photos (byte-identical files per face: one image) and a
    HELEN photo with a file per face (several images: a chunk may end inside it)."""
    from facelandmarks.evaluate.config import EvaluateParams
    from facelandmarks.evaluate.protocols import predict_faces
    from facelandmarks.evaluate.stage import load_runs, predict_in_pool

    faces = crop_subset
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a JPEG at all")
    extra = faces[faces["dataset"] == "300w"].iloc[[0]].copy()
    extra["face_id"], extra["photo_id"], extra["image_path"] = "300w/broken/0", "300w/broken", str(bad)
    faces = pd.concat([faces, extra], ignore_index=True)
    params = EvaluateParams.model_validate({
        "models": {"finetune": {"checkpoint": str(tiny_checkpoint)},
                   "pretrain": {"checkpoint": str(tiny_checkpoint), "datasets": ["infanface"]}},
        "splits": ["test"], "num_threads": 1, "batch_photos": 2, "device": "cpu", "workers": 2})
    runs = load_runs(params, faces)
    one, one_problems = predict_faces(faces, runs, list(params.protocols), params.match_iou, params.batch_photos,
                                      progress=False)
    pool, pool_problems = predict_in_pool(params, faces, runs, workers=2, progress=False)
    assert faces["photo_id"].nunique() > 8  # several chunks of 4 x 2 images: both workers get work

    assert one.keys() == pool.keys()
    for key in one:
        a, b = one[key], pool[key]
        assert a.landmarks.keys() == b.landmarks.keys() and len(a.landmarks) > 0, key
        for face_id, points in a.landmarks.items():
            np.testing.assert_array_equal(points, b.landmarks[face_id], err_msg=f"{key} {face_id}")
        assert a.det_iou == b.det_iou and a.missed == b.missed, key
    assert len(one[("pretrain", "crops")].landmarks) == (faces["dataset"] == "infanface").sum()
    for problems in (one_problems, pool_problems):
        [p] = problems
        assert p["photo_id"] == "300w/broken" and p["reason"] == "unreadable" and p["faces"] == 1
