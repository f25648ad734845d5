"""The pretrain and finetune stages end to end on a few real faces, in a temporary project folder."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import write_stage_faces

from facelandmarks.data.table import write_table
from facelandmarks.model.checkpoint import load_checkpoint
from facelandmarks.model.prediction import predict_crops
from facelandmarks.model.preprocess import to_tensor
from facelandmarks.model.pretrained import OFFLINE_WEIGHTS
from facelandmarks.mlflow_runs import PARENT_ENV, pipeline_run
from facelandmarks.schemes import get_scheme
from facelandmarks.train.runner import evaluate_nme, load_split

ROOT_PARAMS = "params.yaml"


@pytest.mark.slow
# ImageNet init only: random init (mobilenetv3_small_050, pretrained: false) is what every tiny pipeline run of the
# suite trains (tests/tiny_project.py), through these same stages
@pytest.mark.parametrize("backbone, pretrained", [("mobilenetv2_100", "imagenet")])
def test_pretrain_then_finetune_write_checkpoints_reports_and_mlflow_runs(
    landmark_crops, infant_crops, tmp_path, monkeypatch, backbone, pretrained
):
    c1, a1 = write_stage_faces(tmp_path, landmark_crops, "300w", ["train"] * 16 + ["val"] * 8)
    c2, a2 = write_stage_faces(tmp_path, infant_crops, "infanface", ["train"] * 6 + ["val"] * 3 + ["test"] * 3)
    # a second adult set with two augment variants per face; pretrain.variants_per_dataset keeps variant 0 only
    c3, a3 = write_stage_faces(tmp_path, landmark_crops.subset(slice(0, 6)), "youtube_faces68", ["train"] * 6)
    a3 = a3 + [{**r, "variant": 1, "face_id": r["face_id"] + "_v1"} for r in a3]
    write_table(pd.DataFrame(c1 + c2 + c3), tmp_path / "data/interim/crops.parquet")
    write_table(pd.DataFrame(a1 + a2 + a3), tmp_path / "data/processed/augmented.parquet")
    params = yaml.safe_load(open(ROOT_PARAMS))
    params["crop"]["size"] = 64
    params["model"].update(backbone=backbone, head_channels=32, pretrained=pretrained)
    source = "random" if not pretrained else OFFLINE_WEIGHTS[backbone].describe()
    params["train"].update(batch_size=4, progress=False, num_threads=2, figure_faces=4)
    params["pretrain"].update(epochs=2, dataset=["300w", "youtube_faces68"],
                              variants_per_dataset={"youtube_faces68": 1})
    params["finetune"].update(epochs=2, freeze_stages=1, mix={"300w": 1.5},
                              wise_ft={"alphas": [0.5], "max_forgetting": 0.003})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)

    from facelandmarks.train.finetune_stage import main as main_finetune
    from facelandmarks.train.pretrain_stage import main as main_pretrain

    with pipeline_run() as parent_id:
        monkeypatch.setenv(PARENT_ENV, parent_id)
        pre = main_pretrain()
        fine = main_finetune()

    assert json.loads((tmp_path / "reports/pretrain.json").read_text()) == json.loads(json.dumps(pre))
    assert pre["epochs_run"] == 2 and 0 < pre["best_val_nme"] < 10
    assert pre["n_train_rows"] == 16 + 6 and pre["n_val_faces"] == 8  # val = 300-W's only (the first data set)
    assert pre["train_rows_per_dataset"] == {"300w": 16, "youtube_faces68": 6}
    assert pre["selected_on"] == "300w val" and pre["stopped_by_time_cap"] is False and pre["warnings"] == []
    assert pre["pretrained_source"] == source
    report = json.loads((tmp_path / "reports/finetune.json").read_text())
    assert report == json.loads(json.dumps(fine))
    assert np.isfinite(report["test_nme_pretrained"]) and np.isfinite(report["test_nme_finetuned"])
    # finetuning mixes 1.5 x 6 = 9 adult rows into every epoch; 300-W val NME of the chosen model is reported
    assert report["n_train_rows"] == 6 and report["rows_per_epoch"] == 15
    assert report["mix"] == {"300w": {"ratio": 1.5, "pool_rows": 16, "rows_per_epoch": 9}}
    assert report["val_nme_300w_pretrained"] == pytest.approx(pre["best_val_nme"], rel=1e-5)
    assert 0 < report["val_nme_300w_finetuned"] < 10
    assert report["selected_on"] == "infanface val"
    assert report["n_test_faces"] == 3 and report["head_reinitialised"] is False and report["frozen_parameters"] > 0

    # WiSE-FT: alphas 0.5 and 1 measured on the same val faces; the kept one follows the rule, is the saved
    # checkpoint, and its numbers are the reported ones
    wise = report["wise_ft"]
    assert set(wise["val_nme"]) == {"0.5", "1.0"} and set(wise["val_nme_300w"]) == {"0.5", "1.0"}
    limit = report["val_nme_300w_pretrained"] + 0.003
    eligible = [a for a in ("0.5", "1.0") if wise["val_nme_300w"][a] <= limit]
    expected = (min(eligible, key=lambda a: (wise["val_nme"][a], -float(a))) if eligible
                else min(("0.5", "1.0"), key=lambda a: wise["val_nme_300w"][a]))
    assert wise["alpha"] == float(expected) == report["wise_ft_alpha"]
    assert report["val_nme_300w_finetuned"] == pytest.approx(wise["val_nme_300w"][expected], rel=1e-6)
    assert report["val_nme_chosen"] == wise["val_nme"][expected]

    model, cfg = load_checkpoint(tmp_path / "models/finetune/model.pt")
    val = pd.DataFrame(c2)
    val = val[val["split"] == "val"]
    faces = load_split(val, "infanface", "val", tmp_path / "crops.parquet", 64, "crop_path", "crop_landmarks")
    assert float(np.nanmean(evaluate_nme(model, faces, get_scheme("ibug68"), torch.device("cpu")))) == pytest.approx(
        wise["val_nme"][expected], rel=1e-5)
    stored = {k: v for k, v in params["crop"].items() if k not in ("num_threads", "read_workers", "cluster")}
    assert cfg.crop == stored and "cluster" in params["crop"] and cfg.input_size == 64 and cfg.num_points == 68
    assert (tmp_path / "models/finetune/val_predictions.png").stat().st_size > 0
    assert (tmp_path / "checkpoints/finetune/last.pt").is_file()

    client = mlflow.MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_run(parent_id).info.experiment_id])}
    child = runs[f"finetune {backbone}+heatmap infanface"]
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    pre_run = runs[f"pretrain {backbone}+heatmap 300w+youtube_faces68"]
    assert pre_run.data.tags["mlflow.parentRunId"] == parent_id
    assert pre_run.data.params["pretrained_source"] == source
    assert cfg.pretrained_source == f"models/pretrain/model.pt ({source})"  # the finetuned model names its origin
    assert pre_run.data.tags["facelandmarks.stopped_by_time_cap"] == "false"
    assert child.data.metrics["val_nme_300w_finetuned"] == pytest.approx(report["val_nme_300w_finetuned"])
    assert len(client.get_metric_history(child.info.run_id, "val_nme")) == 2
    assert [m.step for m in client.get_metric_history(child.info.run_id, "wise_ft_val_nme")] == [50, 100]
    assert child.data.params["finetune.freeze_stages"] == "1"
    assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"checkpoint", "figures"}

    # the logged model (torch.export) predicts what the checkpoint predicts, for any batch size
    assert report["model_uri"]
    logged = mlflow.pytorch.load_model(report["model_uri"])
    crops = infant_crops.images[:3]
    with torch.no_grad():
        out = logged(to_tensor(crops))
    np.testing.assert_allclose(out.numpy(), predict_crops(model, crops), atol=1e-3)
