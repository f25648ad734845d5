"""The register stage: MLflow registry, the champion gate on VALIDATION faces (target + guard), idempotence,
loading back without executing code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from facelandmarks.registry.decision import (
    CompareParams,
    Measurement,
    compare,
    decide,
    higher_is_better,
)


def _measured(ch: float | None, cp: float | None, faces: int = 30, dataset: str = "infanface") -> Measurement:
    values = {"challenger": ch, **({"champion": cp} if cp is not None else {})}
    return Measurement(dataset, "val", faces, values, {})


def test_gate_rules():
    nme = "nme_inter_ocular"
    win = compare(_measured(0.170, 0.180), "target", 0.002, nme)
    assert win.passed and win.gain == pytest.approx(0.010)
    assert compare(_measured(0.178, 0.180), "target", 0.002, nme).passed  # exactly the margin passes
    assert not compare(_measured(0.1785, 0.180), "target", 0.002, nme).passed  # 0.0015 < 0.002
    assert not compare(_measured(0.180, 0.180), "target", 0.0, nme).passed  # a tie keeps the champion
    assert compare(_measured(0.60, 0.50), "target", 0.05, "auc_08").passed  # AUC: higher is better
    assert higher_is_better("auc_10") and higher_is_better("detected") and not higher_is_better("failure_rate_08")

    guard_ok = compare(_measured(0.108, 0.105, dataset="300w"), "guard", 0.003, nme)   # loses exactly 0.003
    guard_bad = compare(_measured(0.1085, 0.105, dataset="300w"), "guard", 0.003, nme)  # loses 0.0035
    assert guard_ok.passed and not guard_bad.passed and guard_bad.gain == pytest.approx(-0.0035)

    assert decide(win, guard_ok, nme, has_champion=True).promote
    blocked = decide(win, guard_bad, nme, has_champion=True)  # better on infants, forgets adults: kept
    assert not blocked.promote and "300w/val" in blocked.reason and "beyond" in blocked.reason
    assert not decide(compare(_measured(0.179, 0.180), "target", 0.002, nme), guard_ok, nme, True).promote
    first = decide(compare(_measured(0.2, None), "target", 0.002, nme),
                   compare(_measured(0.1, None, dataset="300w"), "guard", 0.003, nme), nme, has_champion=False)
    assert first.promote and first.reason.startswith("no champion yet")
    no_faces = decide(compare(_measured(None, None, faces=0), "target", 0.002, nme), guard_ok, nme, True)
    assert not no_faces.promote and "cannot be checked" in no_faces.reason


def test_selection_never_on_test():
    with pytest.raises(ValueError, match="never used to choose"):
        CompareParams(split="test")
    with pytest.raises(ValueError, match="must not hold the selection split"):
        CompareParams(split="val", report_splits=["val", "test"])
    with pytest.raises(ValueError):  # margins are magnitudes
        CompareParams.model_validate({"target": {"dataset": "infanface", "min_improvement": -0.01}})
    with pytest.raises(ValueError):  # strict: the old flat key is an error, not silently ignored
        CompareParams.model_validate({"min_improvement": 0.0})


@pytest.fixture(scope="module")
def better_checkpoint(tiny_checkpoint, small_crops, tmp_path_factory):
    """A second real model that has learnt more: :func:`tiny_checkpoint` trained for 16 more epochs on the same
    real crops by the training code (:func:`facelandmarks.train.loop.fit`). Returns its ``model.pt``."""
    import torch
    from conftest import ROOT

    from facelandmarks.model.checkpoint import load_checkpoint
    from facelandmarks.schemes import get_scheme
    from facelandmarks.train.dataset import FaceDataset, load_faces
    from facelandmarks.train.loop import FitOptions, fit

    torch.set_num_threads(1)
    torch.manual_seed(1)
    model, cfg = load_checkpoint(tiny_checkpoint)
    faces = load_faces(small_crops[0], ROOT, "crop_path", "crop_landmarks", size=cfg.input_size)
    out = tmp_path_factory.mktemp("better-model")
    fit(model, FaceDataset(faces, get_scheme("ibug68")), faces, [{"params": list(model.parameters()), "lr": 3e-3}],
        FitOptions(epochs=16, batch_size=8, warmup_epochs=0.5, device="cpu", progress=False, resume=False, patience=0),
        out / "model.pt", out / "last.pt", meta={"stage": "tests"})
    return out / "model.pt"


def _faces(annotations, n_val: int = 6, n_test: int = 4):
    df = annotations[0]
    parts = []
    for dataset in ("infanface", "300w"):
        for split, n in (("val", n_val), ("test", n_test)):
            rows = df[(df["dataset"] == dataset) & (df["split"] == split)].sort_values("face_id")
            parts.append(rows.head(n))
    import pandas as pd

    return pd.concat(parts).reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.needs_data
def test_register_gate_on_validation(tiny_checkpoint, better_checkpoint, annotations, tmp_path, monkeypatch):
    import mlflow

    from facelandmarks import FaceLandmarker
    from facelandmarks.data.table import write_table
    from facelandmarks.registry.stage import SPLITS_ARTIFACT, main

    # the champion-to-be is registered from a pipeline whose splits put two of today's InfAnFace val faces in train
    faces = _faces(annotations)
    infant_val = faces.index[(faces["dataset"] == "infanface") & (faces["split"] == "val")]
    old_splits = faces.copy()
    old_splits.loc[infant_val[:2], "split"] = "train"
    table = tmp_path / "annotations.parquet"
    write_table(old_splits, table)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = {
        "seed": 0, "scheme": "ibug68",
        "tracking": {"experiment": "register-test", "tracking_uri": uri, "artifact_location": str(tmp_path / "mlartifacts")},
        "register": {"checkpoint": str(tiny_checkpoint), "annotations": str(table), "device": "cpu", "num_threads": 1,
                     "report": str(tmp_path / "register.json")},
    }
    path = tmp_path / "params.yaml"

    def run(**compare):
        params["register"]["compare"] = compare
        path.write_text(yaml.safe_dump(params))
        report = main(str(path))
        assert json.loads((tmp_path / "register.json").read_text()) == json.loads(json.dumps(report))
        return report

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FACELANDMARKS_PARENT_RUN_ID", raising=False)

    # 1. the first model: promoted because there is no champion, and said so; its numbers are reported
    first = run()
    assert first["registered_new_version"] and first["promoted"] and first["champion_before"] is None
    assert first["challenger"]["version"] == "1" and first["champion_after"] == "1"
    assert first["reason"].startswith("no champion yet") and first["selection_split"] == "val"
    target, guard = first["comparisons"]["target"], first["comparisons"]["guard"]
    assert (target["dataset"], target["split"], target["faces"]) == ("infanface", "val", 4)
    assert (guard["dataset"], guard["split"], guard["faces"]) == ("300w", "val", 6)
    assert target["min_improvement"] == 0.002 and guard["max_regression"] == 0.003
    assert target["challenger"] > 0 and target["champion"] is None
    assert set(first["reported_only"]) == {"infanface/test", "300w/test"}
    assert first["reported_only"]["infanface/test"]["faces"] == 4

    write_table(faces, table)  # today's splits: the two faces are validation faces again
    again = run()  # unchanged checkpoint: nothing new is registered, the alias stays
    assert not again["registered_new_version"] and not again["promoted"] and again["champion_after"] == "1"
    assert again["comparisons"]["target"]["faces"] == 6

    # 2. a better challenger, but the margin asked for is out of reach: registered, not promoted
    params["register"]["checkpoint"] = str(better_checkpoint)
    strict = run(target={"dataset": "infanface", "min_improvement": 0.5})
    assert strict["registered_new_version"] and strict["challenger"]["version"] == "2"
    assert not strict["promoted"] and strict["champion_after"] == "1" and strict["champion_before"]["version"] == "1"
    t = strict["comparisons"]["target"]
    # both models measured now on the same faces, less the two the champion was trained on (its split record)
    assert strict["champion_before"]["trained_on_faces_left_out"] == {
        "infanface/val": 2, "300w/val": 0, "infanface/test": 0, "300w/test": 0}
    assert t["faces"] == 4 and t["champion"] == pytest.approx(target["challenger"], abs=1e-6)
    assert t["gain"] == pytest.approx(t["champion"] - t["challenger"], abs=1e-6) and "< required 0.5" in strict["reason"]

    # 3. default margins: the longer trained model beats the champion on infants, within the margin on adults
    promoted = run()
    assert not promoted["registered_new_version"] and promoted["challenger"]["version"] == "2"
    t, g = promoted["comparisons"]["target"], promoted["comparisons"]["guard"]
    assert t["gain"] >= 0.002 and -g["gain"] <= 0.003, (t, g)
    assert promoted["promoted"] and promoted["champion_after"] == "2" and promoted["reason"].startswith("PROMOTED")
    assert t["gain_se"] is not None and t["gain_se"] > 0
    # test numbers beside, for both models, never in the comparisons
    assert promoted["reported_only"]["300w/test"]["champion"] is not None
    assert all(c["split"] == "val" for c in promoted["comparisons"].values())

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'facelandmarks'")) == [1, 2]
    runs = mlflow.search_runs(experiment_names=["register-test"], filter_string="tags.`facelandmarks.stage` = 'register'",
                              output_format="list")
    last = max(runs, key=lambda r: r.info.start_time)
    assert last.data.tags["register.decision"] == "promoted" and last.data.tags["register.selection_split"] == "val"
    m = last.data.metrics
    assert m["target_challenger_nme_inter_ocular"] == pytest.approx(t["challenger"])
    assert m["target_champion_nme_inter_ocular"] == pytest.approx(t["champion"])
    assert m["guard_champion_nme_inter_ocular"] == pytest.approx(g["champion"])
    assert m["target_faces"] == 4 and m["guard_faces"] == 6 and m["target_margin"] == 0.002 and m["guard_margin"] == 0.003
    assert "reported_infanface_test_challenger_nme_inter_ocular" in m

    champion = FaceLandmarker.load("models:/facelandmarks@champion", device="cpu", tracking_uri=uri)
    assert champion.checkpoint_sha256 == promoted["challenger"]["checkpoint_sha256"]
    # an explicit tracking_uri wins over the process-wide store (which here holds no such model)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")  # (the registry follows it: none is set)
    try:
        again = FaceLandmarker.load("models:/facelandmarks@champion", device="cpu", tracking_uri=uri)
    finally:
        mlflow.set_tracking_uri(uri)
    assert again.checkpoint_sha256 == champion.checkpoint_sha256
    record = client.download_artifacts(client.get_model_version("facelandmarks", "2").run_id, SPLITS_ARTIFACT, str(tmp_path))
    assert Path(record).read_text().count("\n") == len(faces) + 1  # the version's split record: header + one row per face
    pyfunc = mlflow.pyfunc.load_model("models:/facelandmarks/1")
    from conftest import RAW

    from facelandmarks.io.images import read_image

    photo = read_image(RAW / "demo" / "images" / "face_recognition__obama.jpg")
    [faces] = pyfunc.predict(photo)  # MLflow's generic API gives what the product's API gives
    direct = FaceLandmarker.load("models:/facelandmarks/1", device="cpu", tracking_uri=uri)(photo)
    assert faces == [f.to_dict() for f in direct] and len(faces) >= 1
    assert all(len(f["landmarks"]) == 68 for f in faces)


@pytest.mark.slow
@pytest.mark.needs_data
def test_a_champion_without_split_record_is_flagged(tiny_checkpoint, better_checkpoint, annotations, tmp_path,
                                                   monkeypatch):
    """A champion registered before split records were kept: compared on all of today's validation faces, and
    the report says it may have been trained on some of them."""
    import mlflow

    from facelandmarks.data.table import write_table
    from facelandmarks.registry.models import SHA_TAG, log_landmark_model, sha256_file
    from facelandmarks.registry.stage import main

    table = tmp_path / "annotations.parquet"
    write_table(_faces(annotations, n_val=3, n_test=1), table)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FACELANDMARKS_PARENT_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("register-test", artifact_location=(tmp_path / "mlartifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):  # an older version: model and tags, no split record
        log_landmark_model(tiny_checkpoint, registered_model_name="facelandmarks",
                           tags={SHA_TAG: sha256_file(tiny_checkpoint)})
    client = mlflow.MlflowClient()
    client.set_model_version_tag("facelandmarks", "1", SHA_TAG, sha256_file(tiny_checkpoint))
    client.set_registered_model_alias("facelandmarks", "champion", "1")
    params = {"seed": 0, "scheme": "ibug68",
              "tracking": {"experiment": "register-test", "tracking_uri": uri},
              "register": {"checkpoint": str(better_checkpoint), "annotations": str(table), "device": "cpu",
                           "num_threads": 1, "report": str(tmp_path / "register.json"), "compare": {"report_splits": []}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    report = main(str(tmp_path / "params.yaml"))
    assert report["champion_before"]["version"] == "1" and report["champion_before"]["trained_on_faces_left_out"] is None
    assert report["comparisons"]["target"]["faces"] == 3 and report["reported_only"] == {}
    assert "has no record of its splits" in report["reason"] and report["champion_after"] == "2"


class _Payload:
    """Pickles to a call of ``pathlib.Path.touch``: unpickling it would execute code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.needs_data
def test_a_tampered_model_is_refused_without_running_its_code(tiny_checkpoint, tmp_path, monkeypatch):
    """A checkpoint carrying a pickled callable fails to load, from disk and from the MLflow registry, and the
    callable never runs (``torch.load(..., weights_only=True)``)."""
    import mlflow
    import torch

    from facelandmarks import FaceLandmarker
    from facelandmarks.model.checkpoint import CheckpointError
    from facelandmarks.registry.models import log_landmark_model

    blob = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)  # the real file loads safely
    marker = tmp_path / "code-ran"
    blob["meta"]["payload"] = _Payload(marker)
    bad = tmp_path / "tampered" / "model.pt"
    bad.parent.mkdir()
    torch.save(blob, bad)

    with pytest.raises(CheckpointError, match="model.pt"):
        FaceLandmarker.load(bad, device="cpu")
    assert not marker.exists()

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("tampered", artifact_location=(tmp_path / "mlartifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        log_landmark_model(bad, registered_model_name="facelandmarks")
    with pytest.raises(CheckpointError):
        mlflow.pyfunc.load_model("models:/facelandmarks/1")
    with pytest.raises(CheckpointError):
        FaceLandmarker.load("models:/facelandmarks/1", device="cpu", tracking_uri=uri)
    assert not marker.exists()
