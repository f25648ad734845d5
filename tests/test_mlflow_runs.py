"""MLflow tracking: stage runs are children of one pipeline parent run, with params and metrics."""

from __future__ import annotations

import mlflow
import pytest

from facelandmarks.mlflow_runs import PARENT_ENV, flatten_params, pipeline_name, pipeline_run, stage_run

PARAMS = {
    "seed": 1,
    "tracking": {"experiment": "facelandmarks-test", "tracking_uri": "sqlite:///unused.db", "artifact_location": "x"},
    "model": {"backbone": "resnet18", "head": "heatmap"},
    "pretrain": {"dataset": "300w", "lr": 0.002},
    "finetune": {"dataset": "infanface"},
}


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return uri


def test_flatten_and_pipeline_name():
    assert flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}
    assert pipeline_name(PARAMS) == "pipeline resnet18+heatmap 300w->infanface"


@pytest.mark.slow
def test_stage_runs_are_children_of_one_parent_with_params_and_metrics(store, monkeypatch):
    with stage_run("pretrain", PARAMS, run_name="pretrain resnet18+heatmap 300w") as run:
        for epoch, (loss, nme) in enumerate([(3.0, 0.2), (2.0, 0.1)]):
            mlflow.log_metrics({"train_loss": loss, "val_nme": nme}, step=epoch)
        child_id = run.info.run_id
    client = mlflow.MlflowClient(store)
    child = client.get_run(child_id)
    parent_id = child.data.tags["mlflow.parentRunId"]
    parent = client.get_run(parent_id)
    assert child.info.run_name == "pretrain resnet18+heatmap 300w" and child.info.status == "FINISHED"
    assert child.data.params["pretrain.lr"] == "0.002" and child.data.tags["facelandmarks.stage"] == "pretrain"
    assert [m.value for m in client.get_metric_history(child_id, "val_nme")] == [0.2, 0.1]
    assert parent.info.run_name == "pipeline resnet18+heatmap 300w->infanface"
    assert parent.data.tags["facelandmarks.pipeline"] == "true" and parent.info.status == "FINISHED"
    assert client.get_experiment(child.info.experiment_id).name == "facelandmarks-test"

    # `facelandmarks repro`: one parent for the whole `dvc repro`, named to the stages in the environment
    with pipeline_run(PARAMS) as pipeline_id:
        monkeypatch.setenv(PARENT_ENV, pipeline_id)
        with stage_run("finetune", PARAMS) as run2:
            pass
        assert client.get_run(pipeline_id).info.status == "RUNNING"  # the stage left it alone
    assert client.get_run(run2.info.run_id).data.tags["mlflow.parentRunId"] == pipeline_id
    assert client.get_run(pipeline_id).info.status == "FINISHED"

    # a failing stage fails its run and its (owned) parent, and the error propagates
    monkeypatch.delenv(PARENT_ENV)
    with pytest.raises(RuntimeError, match="boom"), stage_run("evaluate", PARAMS) as run3:
        raise RuntimeError("boom")
    failed = client.get_run(run3.info.run_id)
    assert failed.info.status == "FAILED"
    assert client.get_run(failed.data.tags["mlflow.parentRunId"]).info.status == "FAILED"


@pytest.mark.slow
def test_parent_run_carries_key_params_and_headline_metrics_for_the_runs_table(store):
    from facelandmarks.evaluate.summary import headline_metrics
    from facelandmarks.mlflow_runs import EXPERIMENT_KIND, key_params, log_to_parent

    params = {**PARAMS, "crop": {"size": 160}, "model": {**PARAMS["model"], "pretrained": "imagenet"},
              "pretrain": {"dataset": ["300w", "youtube_faces68"], "epochs": 12},
              "finetune": {"dataset": "infanface", "mix": {"300w": 1.0}, "epochs": 10},
              "train": {"loss": "l1", "heatmap_loss": 30.0}}
    assert key_params(params) == {"backbone": "resnet18", "head": "heatmap", "init": "imagenet", "input_size": "160",
                                  "loss": "l1", "heatmap_loss": "30.0",
                                  "pretrain_data": "300w+youtube_faces68", "pretrain_epochs": "12",
                                  "finetune_data": "infanface+300w", "finetune_epochs": "10"}
    tree = {"finetune": {"end_to_end": {"300w": {"test": {"all": {"faces": 3, "nme_inter_ocular": 0.04, "detected": 0.9}}}},
                         "crops": {"300w": {"test": {"all": {"faces": 3, "nme_inter_ocular": 0.035}}}}}}
    with stage_run("evaluate", params) as run:
        parent_id = log_to_parent(headline_metrics(tree), key_params(params))
    client = mlflow.MlflowClient(store)
    assert client.get_run(run.info.run_id).data.tags["mlflow.parentRunId"] == parent_id
    parent = client.get_run(parent_id)
    assert parent.data.metrics == {"finetune.300w.test.e2e.nme_io": 0.04, "finetune.300w.test.e2e.detected": 0.9,
                                   "finetune.300w.test.crops.nme_io": 0.035}
    assert parent.data.params["backbone"] == "resnet18" and parent.data.params["pretrain_data"] == "300w+youtube_faces68"
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags[EXPERIMENT_KIND[0]] == "custom_model_development"  # the UI opens on the training runs table
