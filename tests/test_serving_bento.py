"""A self-contained Bento: ``facelandmarks bento`` puts the MLflow champion into the BentoML model store and builds
a Bento that packs it; with the MLflow store moved away, the Bento (exported, imported into a fresh BentoML home,
``bentoml serve <tag>`` on 127.0.0.1) gives the same answers as the champion served from MLflow before.

Real parts only: an MLflow sqlite store and artifact folder in ``tmp_path``, a real trained checkpoint
(``tiny_checkpoint``), BentoML stores in ``tmp_path``, the real ``facelandmarks`` and ``bentoml`` commands.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests
import yaml
from conftest import RAW, ROOT

from benchmarks.serving_load import BentoServer

pytestmark = pytest.mark.slow

PHOTO = RAW / "demo" / "images" / "face_recognition__two_people.jpg"
#: the servers' ``serve`` section: CPU, one worker with one thread, a detection size for serving.
SERVE = {"device": "cpu", "workers": 1, "threads": 1, "num_threads": 1, "detect_max_side": 640}


def _run(args: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 900) -> str:
    """Run a command of this environment; its stdout. Fails the test with the command's output otherwise."""
    proc = subprocess.run(args, check=False, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


def _last_json(text: str) -> dict:
    return json.loads(next(line for line in reversed(text.splitlines()) if line.startswith("{")))


def _register_champion(checkpoint: Path, store: Path) -> str:
    """``checkpoint`` as version 1 of ``facelandmarks`` in a new MLflow store under ``store``, alias ``champion``;
    returns the tracking URI (as the register stage does it: :func:`log_landmark_model`)."""
    import mlflow

    from facelandmarks.registry.models import SHA_TAG, log_landmark_model, sha256_file

    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("bento-test", artifact_location=(store / "mlartifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        log_landmark_model(checkpoint, registered_model_name="facelandmarks", tags={SHA_TAG: sha256_file(checkpoint)})
    mlflow.MlflowClient().set_registered_model_alias("facelandmarks", "champion", "1")
    return uri


def _faces_and_info(server: BentoServer) -> tuple[list[dict], dict]:
    r = requests.post(f"{server.url}/faces", files={"image": (PHOTO.name, PHOTO.read_bytes())}, timeout=300)
    assert r.status_code == 200, f"{r.status_code} {r.text}\n{server.log_tail()}"
    info = requests.post(f"{server.url}/info", json={}, timeout=60)
    assert info.status_code == 200, info.text
    return r.json(), info.json()


def test_bento_serves_its_packed_champion_without_mlflow(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FACELANDMARKS_PARENT_RUN_ID", raising=False)
    sha = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    mlflow_dir = tmp_path / "mlflow"
    tracking = _register_champion(tiny_checkpoint, mlflow_dir)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"serve": SERVE, "tracking": {"tracking_uri": tracking}}))
    home_a, home_b = tmp_path / "bentoml-a", tmp_path / "bentoml-b"
    env = {"FACELANDMARKS_PARAMS": str(params), "MLFLOW_TRACKING_URI": tracking, "FACELANDMARKS_MODEL_URI": "",
           "BENTOML_HOME": str(home_a), "BENTOML_DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}

    # 1. development: `bentoml serve` in the project root serves @champion from the MLflow registry
    with BentoServer(".", env, ready_timeout_s=300, cwd=ROOT, log_path=tmp_path / "serve-mlflow.log") as server:
        want, info = _faces_and_info(server)
    assert len(want) == 2
    assert info["registry"] == {"name": "facelandmarks", "version": "1"} and info["checkpoint_sha256"] == sha
    assert info["source"] == "mlflow models:/facelandmarks/1" and info["bento_model"] is None

    # 2. the champion into the BentoML store, and a Bento of it whose labels come from the packed model
    cli = [sys.executable, "-m", "facelandmarks.cli", "bento"]
    built = _last_json(_run([*cli, "--json", "--label", "purpose=test"], env))
    tag = f"facelandmarks:r1-{sha[:16]}"
    assert built["model"] == {"tag": tag, "reused": False, "checkpoint_sha256": sha,
                              "registry": ["facelandmarks", "1"], "model_uri": "models:/facelandmarks/1"}
    bento = built["bento"]
    name, version = bento.split(":")
    manifest = yaml.safe_load((home_a / "bentos" / name / version / "bento.yaml").read_text())
    assert manifest["labels"] == {"project": "facelandmarks", "purpose": "test", "model": tag,
                                  "registered_model": "facelandmarks", "registry_version": "1",
                                  "champion_version": "1", "checkpoint_sha256": sha}
    assert manifest["args"] == {"model": tag}
    assert [m["tag"] for s in manifest["services"] for m in s["models"]] == [tag]
    # importing the same checkpoint again finds the entry: no second model in the store
    again = _last_json(_run([*cli, "--import-only", "--json"], env))
    assert again["model"]["tag"] == tag and again["model"]["reused"] is True and again["bento"] is None
    models = json.loads(_run([sys.executable, "-m", "bentoml", "models", "list", "-o", "json"], env))
    assert [m["tag"] for m in models] == [tag]

    # 3. the exported Bento holds the checkpoint itself
    archive = tmp_path / "facelandmarks.tar"
    _run([sys.executable, "-m", "bentoml", "export", bento, str(archive)], env)
    with tarfile.open(archive) as tar:
        packed = [m for m in tar.getmembers() if m.name.endswith("model.pt")]
        assert [m.name.lstrip("./") for m in packed] == [f"models/facelandmarks/r1-{sha[:16]}/model.pt"]
        assert hashlib.sha256(tar.extractfile(packed[0]).read()).hexdigest() == sha

    # 4. the MLflow store away; the Bento imported into a fresh BentoML home and served from there
    os.rename(mlflow_dir, tmp_path / "mlflow-away")
    env_b = {**env, "BENTOML_HOME": str(home_b)}
    _run([sys.executable, "-m", "bentoml", "import", str(archive)], env_b)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with BentoServer(bento, env_b, ready_timeout_s=300, cwd=elsewhere, log_path=tmp_path / "serve-bento.log") as server:
        got, info = _faces_and_info(server)
        assert server.alive()
    assert got == want
    assert info["source"] == f"bentoml model store {tag}" and info["bento_model"] == tag
    assert info["registry"] == {"name": "facelandmarks", "version": "1"} and info["checkpoint_sha256"] == sha
    assert info["model_uri"] == "models:/facelandmarks/1"
    assert not mlflow_dir.exists(), "the Bento's service opened the MLflow store (sqlite created it again)"
