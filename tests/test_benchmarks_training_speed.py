"""The full pipeline's wall time read back from a real MLflow store (benchmarks.training_speed)."""

from __future__ import annotations

import pytest

from benchmarks.training_speed import FULL_PIPELINE_STAGES, last_full_pipeline

T0 = 1_790_000_000_000  # ms since the epoch (2026-09-21 14:13:20 UTC)


def _pipeline(client, exp_id: str, start_ms: int, minutes: float, stages, status: str = "FINISHED") -> str:
    """A parent run as ``facelandmarks repro`` logs it, with one FINISHED child run per stage."""
    from facelandmarks.mlflow_runs import PIPELINE_TAG, STAGE_TAG

    parent = client.create_run(exp_id, start_time=start_ms, tags={PIPELINE_TAG: "true"}, run_name="pipeline x").info.run_id
    for k, st in enumerate(stages):
        child = client.create_run(exp_id, start_time=start_ms + k, run_name=st,
                                  tags={"mlflow.parentRunId": parent, STAGE_TAG: st}).info.run_id
        client.set_terminated(child, "FINISHED", end_time=start_ms + k + 1)
    if status == "RUNNING":
        return parent
    client.set_terminated(parent, status, end_time=start_ms + int(minutes * 60_000))
    return parent


def test_the_latest_finished_run_of_every_stage_gives_the_wall_time(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("fl", artifact_location=str(tmp_path / "art"))
    assert last_full_pipeline(uri, "fl") is None  # nothing logged yet
    full = _pipeline(client, exp_id, T0, 74.0, FULL_PIPELINE_STAGES)
    _pipeline(client, exp_id, T0 + 10_000_000, 7.2, ("evaluate", "register"))  # later, but only two stages reran
    _pipeline(client, exp_id, T0 + 20_000_000, 5.0, FULL_PIPELINE_STAGES[:-1], status="KILLED")
    _pipeline(client, exp_id, T0 + 30_000_000, 0.0, FULL_PIPELINE_STAGES, status="RUNNING")  # not finished
    got = last_full_pipeline(uri, "fl")
    assert got is not None and got["run_id"] == full and got["source"] == "mlflow"
    assert got["wall_s"] == pytest.approx(74.0 * 60) and got["started"] == "2026-09-21T14:13:20Z"
    assert got["stages"] == list(FULL_PIPELINE_STAGES)
    # a newer whole pipeline wins
    newer = _pipeline(client, exp_id, T0 + 40_000_000, 70.5, FULL_PIPELINE_STAGES)
    assert last_full_pipeline(uri, "fl")["run_id"] == newer
    assert last_full_pipeline(uri, "no such experiment") is None


def test_the_report_names_the_mlflow_run_it_took_the_time_from():
    from benchmarks.report import _training_table

    row = _training_table({"repro": {"wall_s": 4440.0, "run_id": "abc", "run_name": "pipeline x", "source": "mlflow",
                                     "started": "2026-12-06T14:58:22Z", "stages": ["crop", "register"]}})
    assert "| full `dvc repro` wall time | 74.0 min | MLflow parent run `pipeline x` of 2026-12-06T14:58:22Z" in row
