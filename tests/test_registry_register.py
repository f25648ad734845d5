"""The register stage: MLflow registry, the champion decision on the same faces, idempotence, loading back."""

from __future__ import annotations

import json

import pytest
import yaml

from facelandmarks.registry.decision import decide, higher_is_better


def test_decision_rules():
    assert decide(0.05, None, "nme_inter_ocular").promote
    assert decide(0.05, 0.06, "nme_inter_ocular").promote
    assert not decide(0.06, 0.05, "nme_inter_ocular").promote
    assert not decide(0.05, 0.05, "nme_inter_ocular").promote  # a tie keeps the champion
    assert not decide(0.055, 0.06, "nme_inter_ocular", min_improvement=0.01).promote
    assert decide(0.7, 0.6, "auc_08").promote and higher_is_better("auc_10") and not higher_is_better("failure_rate_08")


@pytest.fixture
def other_checkpoint(tiny_checkpoint, tmp_path):
    """A second real model: the tiny trained model with its head weights halved (different predictions)."""
    from facelandmarks.model.checkpoint import load_checkpoint, save_checkpoint

    model, _ = load_checkpoint(tiny_checkpoint)
    for p in model.head.parameters():  # a different, still trained network
        p.data.mul_(0.5)
    path = tmp_path / "other" / "model.pt"
    save_checkpoint(path, model, meta={"stage": "tests"})
    return path


@pytest.mark.slow
def test_register_twice_then_a_challenger(tiny_checkpoint, other_checkpoint, annotations, tmp_path, monkeypatch):
    import mlflow

    from facelandmarks import FaceLandmarker
    from facelandmarks.data.table import write_table
    from facelandmarks.registry.stage import main

    df = annotations[0]
    infant_test = df[(df["dataset"] == "infanface") & (df["split"] == "test")].sort_values("face_id").head(6)
    table = tmp_path / "annotations.parquet"
    write_table(infant_test.reset_index(drop=True), table)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = {
        "seed": 0, "scheme": "ibug68",
        "tracking": {"experiment": "register-test", "tracking_uri": uri, "artifact_location": str(tmp_path / "mlartifacts")},
        "register": {"checkpoint": str(tiny_checkpoint), "annotations": str(table), "device": "cpu", "num_threads": 1,
                     "report": str(tmp_path / "register.json")},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FACELANDMARKS_PARENT_RUN_ID", raising=False)

    first = main(str(path))
    assert first["registered_new_version"] and first["promoted"] and first["champion_before"] is None
    assert first["challenger"]["version"] == "1" and first["champion_after"] == "1"
    assert first["compared_on"] == {"dataset": "infanface", "split": "test", "protocol": "crops", "faces": 6}

    again = main(str(path))  # unchanged: nothing new is registered, the alias stays
    assert not again["registered_new_version"] and not again["promoted"]
    assert again["challenger"]["version"] == "1" and again["champion_after"] == "1"
    assert again["challenger"]["value"] == pytest.approx(first["challenger"]["value"])

    params["register"]["checkpoint"] = str(other_checkpoint)
    path.write_text(yaml.safe_dump(params))
    third = main(str(path))
    assert third["registered_new_version"] and third["challenger"]["version"] == "2"
    before, after = third["champion_before"], third["challenger"]
    assert before["version"] == "1" and before["value"] == pytest.approx(first["challenger"]["value"], abs=1e-6)
    # the decision follows the two numbers measured on the same faces
    assert third["promoted"] == (after["value"] < before["value"])
    assert third["champion_after"] == ("2" if third["promoted"] else "1")
    assert json.loads((tmp_path / "register.json").read_text())["reason"] == third["reason"]

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'facelandmarks'")) == [1, 2]
    runs = mlflow.search_runs(experiment_names=["register-test"], filter_string="tags.`facelandmarks.stage` = 'register'",
                              output_format="list")
    last = max(runs, key=lambda r: r.info.start_time)
    assert last.data.tags["register.decision"] == ("promoted" if third["promoted"] else "kept")
    assert "champion_nme_inter_ocular" in last.data.metrics and "challenger_nme_inter_ocular" in last.data.metrics

    champion = FaceLandmarker.load("models:/facelandmarks@champion", device="cpu", tracking_uri=uri)
    expected = third["challenger"]["checkpoint_sha256"] if third["promoted"] else first["challenger"]["checkpoint_sha256"]
    assert champion.checkpoint_sha256 == expected
    pyfunc = mlflow.pyfunc.load_model("models:/facelandmarks/1")
    from facelandmarks.io.images import read_image
    from conftest import RAW

    [faces] = pyfunc.predict(read_image(RAW / "demo" / "images" / "face_recognition__obama.jpg"))
    assert len(faces) == 1 and len(faces[0]["landmarks"]) == 68
