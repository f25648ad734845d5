"""A scheduled retraining run fires and completes against a real, local Prefect server.

Starts ``prefect server start --host 127.0.0.1`` on a free port (its database in ``tmp_path``), serves
the flow with ``facelandmarks schedule --interval 5`` for a tiny copy of the project (only the
``download`` stage, to stay cheap), waits (bounded) until a run created by the schedule is COMPLETED,
then stops the serving process and then the server, by their PIDs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_until_healthy

pytestmark = pytest.mark.slow

SERVER_START_S = 120  # the server needs about 15 s on 2 idle cores
RUN_WAIT_S = 120  # from serving to a completed scheduled run: about 30 s on 2 idle cores
DEPLOYMENT = "scheduled-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def _stop(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM the process by its PID; if it has not exited after ``timeout_s``, SIGKILL its process
    group (it was started as a group leader, so this reaches only what it started)."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait_completed_scheduled_run(api: str, serving: subprocess.Popen, log: Path):
    """The first COMPLETED flow run of the deployment (polls the API); fails on a failed run or timeout."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + RUN_WAIT_S
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        deployment = None
        while time.monotonic() < deadline:
            assert serving.poll() is None, f"the serving process exited:\n{_tail(log)}"
            try:
                deployment = deployment or client.read_deployment_by_name(f"retrain/{DEPLOYMENT}")
            except Exception:  # not registered yet
                time.sleep(1)
                continue
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
            bad = [r for r in runs if r.state and r.state.type.value in ("FAILED", "CRASHED")]
            assert not bad, f"scheduled run {bad[0].name} {bad[0].state.type.value}: {bad[0].state.message}\n{_tail(log)}"
            done = [r for r in runs if r.state and r.state.is_completed()]
            if done:
                return deployment, done[0], client.read_artifacts()
            time.sleep(2)
    pytest.fail(f"no scheduled run COMPLETED within {RUN_WAIT_S} s:\n{_tail(log)}")


def test_scheduled_run_fires_and_completes(tiny_project, tmp_path):
    import mlflow

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_env = {**tiny_project.env, "PREFECT_HOME": str(tmp_path / "prefect-server"),
                  "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server_env.pop("PREFECT_API_URL", None)
    bindir = Path(sys.executable).parent
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"

    with open(server_log, "w") as out:
        server = subprocess.Popen([str(bindir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=server_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(f"{api}/health", server, server_log, SERVER_START_S, "prefect server")
        serve_env = {**tiny_project.env, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "prefect-client"),
                     "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
        t0 = time.monotonic()
        with open(serve_log, "w") as out:
            serving = subprocess.Popen(
                [str(bindir / "facelandmarks"), "schedule", "--interval", "5", "--name", DEPLOYMENT,
                 "--project-dir", str(tiny_project.root), "--target", "download"],
                cwd=tiny_project.root, env=serve_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            deployment, run, artifacts = _wait_completed_scheduled_run(api, serving, serve_log)
            waited = time.monotonic() - t0
        finally:
            _stop(serving)
    finally:
        _stop(server)
    assert server.returncode is not None and serving.returncode is not None

    print(f"scheduled run {run.name} completed {waited:.0f} s after serving started")
    assert run.auto_scheduled, "the completed run was not created by the schedule"
    assert run.parameters["project_dir"] == str(tiny_project.root) and run.parameters["targets"] == ["download"]
    assert deployment.schedules and deployment.schedules[0].schedule.interval.total_seconds() == 5
    # the run did its work in the project, and links to its MLflow parent run
    assert (tiny_project.root / "reports" / "data_validation.json").is_file()
    links = [a for a in artifacts if a.key == "mlflow-pipeline-run" and a.flow_run_id == run.id]
    assert len(links) == 1
    client = mlflow.MlflowClient(tracking_uri=tiny_project.tracking_uri)
    parents = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 filter_string=f"tags.`prefect.flow_run_id` = '{run.id}'")
    assert len(parents) == 1 and parents[0].info.run_id in str(links[0].data)
