"""The retraining flow end to end on a tiny copy of the project (Prefect's test harness, real stages).

Each test runs the real ``dvc pull`` / ``dvc repro`` / ``bentoml build`` in a tiny copy made by
``tests/tiny_project.py`` (12 photos per data set, one epoch), with MLflow, BentoML and Prefect stores
inside ``tmp_path``.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_harness():
    """One temporary Prefect API (sqlite in a temp folder) for the module's flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def _stages(root: Path) -> list[str]:
    return list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])


def _artifacts(flow_run_id: str) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def _task_runs(flow_run_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _mlflow_client(tiny):
    import mlflow

    mlflow.set_tracking_uri(tiny.tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tiny.tracking_uri)


def _bento_tags(tiny) -> list[str]:
    from facelandmarks.flows.steps import bentos_with_labels

    return bentos_with_labels(tiny.root, {})


def test_retrain_runs_pipeline_promotes_champion_and_builds_bento(tiny_project, prefect_harness, monkeypatch):
    from facelandmarks.flows.steps import bentos_with_labels
    from facelandmarks.flows.retrain import retrain

    tiny_project.apply_env(monkeypatch)
    state = retrain(project_dir=str(tiny_project.root), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    flow_run_id = str(state.state_details.flow_run_id)
    assert result["flow_run_id"] == flow_run_id

    # DVC ran every stage of the graph, evaluate and register included
    assert sorted(result["stages"]["ran"]) == sorted(_stages(tiny_project.root))
    assert result["metrics"] and result["decision"] is not None
    assert result["decision"]["promoted"] is True  # first run: no champion before

    # the champion moved in the registry, and the Bento serving it was built with its version
    champ = result["champion"]
    assert champ["before"] is None and champ["after"] is not None and champ["changed"] is True
    client = _mlflow_client(tiny_project)
    assert str(client.get_model_version_by_alias(champ["model"], champ["alias"]).version) == champ["after"]
    assert result["bento"] and bentos_with_labels(tiny_project.root, {"champion_version": champ["after"]}) == [result["bento"]]

    # one MLflow parent run, tagged with this flow run; every stage run nested under it; links both ways
    ml = result["mlflow"]
    parent = client.get_run(ml["parent_run_id"])
    assert parent.data.tags["prefect.flow_run_id"] == flow_run_id
    assert ml["children"], "no stage run nested under the parent run"
    for child in ml["children"]:
        run = client.get_run(child["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == ml["parent_run_id"] and run.info.status == "FINISHED"
    assert {"register", "evaluate"} <= {c["stage"] for c in ml["children"]}
    arts = _artifacts(flow_run_id)
    assert ml["url"] in str(arts["mlflow-pipeline-run"].data) and ml["parent_run_id"] in ml["url"]
    assert ml["parent_run_id"] in str(arts["retrain-summary"].data)

    # a second run with nothing changed: DVC skips every stage, no decision, no new Bento
    again = retrain(project_dir=str(tiny_project.root))
    assert again["stages"]["ran"] == [] and again["decision"] is None
    assert again["champion"]["changed"] is False and again["champion"]["after"] == champ["after"]
    assert again["bento"] is None and len(_bento_tags(tiny_project)) == 1


def test_failed_stage_fails_flow_and_promotes_nothing(tiny_project, prefect_harness, monkeypatch):
    from facelandmarks.flows.steps import StageFailed
    from facelandmarks.flows.retrain import retrain

    tiny_project.apply_env(monkeypatch)
    # an unknown key: the crop stage's params model rejects it, after download has run
    state = retrain(project_dir=str(tiny_project.root), overrides=["crop.no_such_knob=1"], return_state=True)
    assert state.is_failed()
    with pytest.raises(StageFailed) as err:
        state.result()
    assert err.value.stage == "crop" and err.value.ran == ["download"]
    assert "no_such_knob" in str(err.value)

    root = tiny_project.root
    assert not (root / "reports" / "register.json").exists() and not (root / "reports" / "metrics.json").exists()
    client = _mlflow_client(tiny_project)
    assert client.search_registered_models() == []
    assert _bento_tags(tiny_project) == []
    flow_run_id = str(state.state_details.flow_run_id)
    parents = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'",
    )
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert "mlflow-pipeline-run" in _artifacts(flow_run_id)


class _FirstFailure(logging.Handler):
    """Sets ``event`` when the flow logs the first failed attempt of the ``dvc pull`` task."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.event = threading.Event()

    def emit(self, record):
        if "dvc pull" in getattr(record, "task_run_name", "") and "Retry" in record.getMessage():
            self.event.set()


def test_dvc_pull_is_retried_until_the_remote_answers(tiny_project, prefect_harness, monkeypatch, tmp_path):
    """A remote that is away for the first attempt: the pull is retried and the flow completes."""
    from facelandmarks.flows.retrain import retrain

    root = tiny_project.root
    # a small file tracked by DVC and pushed to a remote of its own, then removed from cache and workspace
    (root / "extra").mkdir()
    (root / "extra" / "notes.txt").write_text("landmarks\n")
    remote, away = tmp_path / "remote", tmp_path / "remote-away"
    tiny_project.run("dvc", "add", "extra/notes.txt")
    tiny_project.run("dvc", "remote", "add", "--local", "small", str(remote))
    tiny_project.run("dvc", "push", "-r", "small", "extra/notes.txt.dvc")
    md5 = yaml.safe_load((root / "extra" / "notes.txt.dvc").read_text())["outs"][0]["md5"]
    (root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).unlink()
    (root / "extra" / "notes.txt").unlink()
    tiny_project.run("dvc", "remote", "default", "--local", "small")
    tiny_project.set_params(["retrain.pull_targets=[extra/notes.txt.dvc]", "retrain.pull_retries=5",
                             "retrain.retry_delay_seconds=2"])
    os.rename(remote, away)

    handler = _FirstFailure()
    logging.getLogger("prefect").addHandler(handler)

    def bring_remote_back():
        if handler.event.wait(timeout=120):
            os.rename(away, remote)

    t = threading.Thread(target=bring_remote_back, daemon=True)
    t.start()
    tiny_project.apply_env(monkeypatch)
    try:
        # `dvc repro data.dvc`: the data pin only, no stage to run (this test is about the pull)
        state = retrain(project_dir=str(root), targets=["data.dvc"], return_state=True)
    finally:
        logging.getLogger("prefect").removeHandler(handler)
        t.join(timeout=5)
    assert handler.event.is_set(), "the first dvc pull did not fail"
    assert state.is_completed(), state.message
    assert (root / "extra" / "notes.txt").read_text() == "landmarks\n"
    pulls = [tr for tr in _task_runs(str(state.state_details.flow_run_id)) if tr.name.startswith("dvc pull")]
    assert len(pulls) == 1 and pulls[0].run_count >= 2 and pulls[0].state.is_completed()
    shutil.rmtree(remote, ignore_errors=True)
