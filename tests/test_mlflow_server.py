"""The pipeline against an MLflow TRACKING SERVER (``mlflow server``), not a local sqlite file, and run twice.

A real ``mlflow server`` (sqlite database + artifact root, both in a temporary folder, ``--serve-artifacts``
so that clients upload and download artifacts through the server over HTTP) is started on 127.0.0.1
at a free port. A tiny copy of the project (``tests/tiny_project.py``) runs ``dvc repro`` with
``MLFLOW_TRACKING_URI=http://127.0.0.1:<port>``; every stage's run, the registration and the
``@champion`` alias must land on the server, and the champion must load back from it.

Same inputs, same outputs: the same copy then reruns every stage up to ``evaluate`` (``dvc repro --force``)
and every output must have the DVC hash of the first run. A fresh clone's ``make repro`` of the real pipeline
(2026-12-07) reproduced every tensor and every evaluate output of the committed run, but not the checkpoint
files: ``torch.save`` named the folder inside its zip after the random temporary file of the atomic write, so
the checkpoint sha256, the model's identity in the registry, the Bento labels and the ONNX metadata, changed in
every run. (One pipeline run serves both tests: a tiny run costs about two minutes of CI.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]

#: stage reports that hold their own run time (seconds, images per second, MLflow run ids): measurements, not results
TIMED_REPORTS = {"reports/data_validation.json", "reports/crop.json", "reports/augment.json", "reports/pretrain.json",
                 "reports/finetune.json"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(root: Path, env: dict[str, str], timeout: float = 120) -> Iterator[str]:
    """Run ``mlflow server`` with its database and artifacts under ``root``; yields its http URI.

    The server (and the workers it forks) runs in its own process group, which is killed on exit
    whatever happened inside the ``with`` block.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "w")  # noqa: SIM115 (closed in the finally below, after the server)
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(f"{uri}/health", proc, root / "server.log", timeout, "mlflow server")
        yield uri
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def served_pipeline(tmp_path_factory, tiny_data_cache) -> Iterator[tuple]:
    """A tiny copy of the project after a whole ``dvc repro`` against a running ``mlflow server``:
    ``(tiny project, server URI, server folder)``; the server runs until the module's tests end."""
    from conftest import _require_data
    from tiny_project import make_tiny_project

    _require_data()
    root = tmp_path_factory.mktemp("served-pipeline")
    tiny = make_tiny_project(root / "project", data_cache=tiny_data_cache)
    with mlflow_server(root / "server", tiny.env) as uri:
        tiny.env["MLFLOW_TRACKING_URI"] = uri
        tiny.run("dvc", "repro", timeout=900)
        yield tiny, uri, root / "server"


def _outputs(lock_path: Path) -> dict[str, str]:
    """``{output path: DVC md5}`` of every stage output in ``dvc.lock``."""
    stages = yaml.safe_load(lock_path.read_text())["stages"]
    return {o["path"]: o["md5"] for stage in stages.values() for o in stage.get("outs", [])}


def test_pipeline_registers_and_loads_champion_through_a_tracking_server(served_pipeline, monkeypatch):
    import mlflow
    from conftest import RAW

    from facelandmarks import FaceLandmarker
    from facelandmarks.io.images import read_image

    tiny_project, uri, server_dir = served_pipeline
    params = tiny_project.params()
    report = json.loads((tiny_project.root / params["register"]["report"]).read_text())
    assert report["promoted"] and report["champion_after"] == report["challenger"]["version"] == "1"
    pretrain = json.loads((tiny_project.root / "reports" / "pretrain.json").read_text())
    assert params["model"]["pretrained"] is False and pretrain["pretrained_source"] == "random"

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(params["tracking"]["experiment"])
    # the server's artifact root, proxied over HTTP: no client writes into a path of its own
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location
    runs = client.search_runs([exp.experiment_id])
    stages = {r.data.tags.get("facelandmarks.stage") for r in runs}
    assert {"crop", "pretrain", "finetune", "evaluate", "register"} <= stages, stages
    assert all(r.info.status == "FINISHED" for r in runs)

    champion = client.get_model_version_by_alias(params["register"]["model_name"], params["register"]["alias"])
    assert champion.version == "1"
    # the registered files were uploaded through the server into its artifact destination
    stored = [p for p in (server_dir / "artifacts").rglob("*") if p.is_file()]
    assert any(p.suffix == ".pt" for p in stored), sorted(map(str, stored))[:20]
    assert not (tiny_project.root / ".stores" / "mlartifacts").exists()
    assert not (tiny_project.root / ".stores" / "mlflow.db").exists()

    # the champion loads back from the server (downloaded over HTTP) and is the registered checkpoint; as
    # `facelandmarks predict` and the service find it: MLFLOW_TRACKING_URI names the server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # overrides a global one left by another test of the session
    try:
        landmarker = FaceLandmarker.load(f"models:/{champion.name}@champion", device="cpu")
    finally:
        mlflow.set_tracking_uri(None)
    assert landmarker.checkpoint_sha256 == report["challenger"]["checkpoint_sha256"]
    [faces] = landmarker.predict([read_image(RAW / "demo" / "images" / "face_recognition__obama.jpg")])
    assert faces and all(f.landmarks.shape == (68, 2) for f in faces)  # MTCNN finds the face(s)


def test_pipeline_run_twice_writes_the_same_outputs(served_pipeline):
    tiny_project, _, _ = served_pipeline
    first = _outputs(tiny_project.root / "dvc.lock")
    assert {"models/pretrain", "models/finetune", "data/interim/crops", "reports/metrics.json"} <= set(first)
    tiny_project.run("dvc", "repro", "--force", "evaluate", timeout=900)
    second = _outputs(tiny_project.root / "dvc.lock")
    assert set(second) == set(first)
    changed = sorted(p for p in first if first[p] != second[p] and p not in TIMED_REPORTS)
    assert changed == [], f"outputs that differ between two runs of the same pipeline: {changed}"
