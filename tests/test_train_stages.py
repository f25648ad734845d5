"""The pretrain and finetune stages end to end on a few real faces, in a temporary project folder."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from facelandmarks.data.table import write_table
from facelandmarks.io.images import write_image
from facelandmarks.model.checkpoint import load_checkpoint
from facelandmarks.model.inference import predict_crops
from facelandmarks.model.preprocess import to_tensor
from facelandmarks.mlflow_runs import PARENT_ENV, pipeline_run

ROOT_PARAMS = "params.yaml"


def _write_faces(root, faces, dataset, splits):
    """Write crops as PNGs; return (crops rows, augmented rows) for the given split of each face."""
    crops, augmented = [], []
    for i, split in enumerate(splits):
        rel = f"data/interim/crops/{dataset}/{i}.png"
        write_image(root / rel, faces.images[i])
        row = {"face_id": str(faces.face_ids[i]), "dataset": dataset, "subset": "s", "split": split,
               "visible": faces.visible[i], "scheme": "ibug68"}
        crops.append({**row, "crop_path": rel, "crop_landmarks": faces.landmarks[i]})
        if split == "train":
            augmented.append({**row, "variant": 0, "image_path": rel, "landmarks": faces.landmarks[i]})
    return crops, augmented


@pytest.mark.slow
def test_pretrain_then_finetune_write_checkpoints_reports_and_mlflow_runs(
    landmark_crops, infant_crops, tmp_path, monkeypatch
):
    c1, a1 = _write_faces(tmp_path, landmark_crops, "300w", ["train"] * 16 + ["val"] * 8)
    c2, a2 = _write_faces(tmp_path, infant_crops, "infanface", ["train"] * 6 + ["val"] * 3 + ["test"] * 3)
    write_table(pd.DataFrame(c1 + c2), tmp_path / "data/interim/crops.parquet")
    write_table(pd.DataFrame(a1 + a2), tmp_path / "data/processed/augmented.parquet")
    params = yaml.safe_load(open(ROOT_PARAMS))
    params["crop"]["size"] = 64
    params["model"].update(backbone="mobilenetv3_small_050", head_channels=32)
    params["train"].update(batch_size=4, progress=False, num_threads=2, figure_faces=4)
    params["pretrain"].update(epochs=2)
    params["finetune"].update(epochs=2, freeze_stages=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)

    from facelandmarks.train.stages import main_finetune, main_pretrain

    with pipeline_run() as parent_id:
        monkeypatch.setenv(PARENT_ENV, parent_id)
        pre = main_pretrain()
        fine = main_finetune()

    assert json.loads((tmp_path / "reports/pretrain.json").read_text()) == json.loads(json.dumps(pre))
    assert pre["epochs_run"] == 2 and 0 < pre["best_val_nme"] < 10
    assert pre["n_train_rows"] == 16 and pre["n_val_faces"] == 8
    report = json.loads((tmp_path / "reports/finetune.json").read_text())
    assert np.isfinite(report["test_nme_pretrained"]) and np.isfinite(report["test_nme_finetuned"])
    assert report["n_test_faces"] == 3 and report["head_reinitialised"] is False and report["frozen_parameters"] > 0

    model, cfg = load_checkpoint(tmp_path / "models/finetune/model.pt")
    assert cfg.crop == params["crop"] and cfg.input_size == 64 and cfg.num_points == 68
    assert (tmp_path / "models/finetune/val_predictions.png").stat().st_size > 0
    assert (tmp_path / "checkpoints/finetune/last.pt").is_file()

    client = mlflow.MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_run(parent_id).info.experiment_id])}
    child = runs["finetune mobilenetv3_small_050+heatmap infanface"]
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert runs["pretrain mobilenetv3_small_050+heatmap 300w"].data.tags["mlflow.parentRunId"] == parent_id
    assert len(client.get_metric_history(child.info.run_id, "val_nme")) == 2
    assert child.data.params["finetune.freeze_stages"] == "1"
    assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"checkpoint", "figures"}

    # the logged model (torch.export) predicts what the checkpoint predicts, for any batch size
    assert report["model_uri"]
    logged = mlflow.pytorch.load_model(report["model_uri"])
    crops = infant_crops.images[:3]
    with torch.no_grad():
        out = logged(to_tensor(crops))
    np.testing.assert_allclose(out.numpy(), predict_crops(model, crops), atol=1e-3)
