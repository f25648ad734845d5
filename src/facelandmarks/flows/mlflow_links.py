"""Links between a Prefect flow run and the MLflow runs it made (both directions).

The flow run gets a link artifact to the pipeline's MLflow parent run and a summary listing each
stage's child run; the MLflow parent run gets tags naming the Prefect flow run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["mlflow_ui_base", "run_url", "child_runs", "tag_parent_run"]

#: Tags set on the MLflow parent run.
PREFECT_FLOW_RUN_TAG = "prefect.flow_run_id"
PREFECT_FLOW_RUN_URL_TAG = "prefect.flow_run_url"


def mlflow_ui_base(tracking_uri: str, configured: str) -> str:
    """Base URL of the MLflow UI: the tracking server itself when ``tracking_uri`` is http(s), else
    ``configured`` (params ``retrain.mlflow_ui``, where ``mlflow ui`` serves the local store)."""
    base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else configured
    return base.rstrip("/")


def run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """URL of one run's page in the MLflow UI (MLflow 3 route ``#/experiments/<id>/runs/<id>``)."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def child_runs(parent_run_id: str, ui_base: str) -> list[dict[str, Any]]:
    """The child runs nested under a parent run, oldest first.

    Returns:
        one dict per child run: ``stage`` (tag ``facelandmarks.stage``, else the run name),
        ``run_id``, ``name``, ``status`` (``FINISHED``/``FAILED``/...), ``url``.
    """
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    exp_id = parent.info.experiment_id
    runs = client.search_runs(
        [exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"], max_results=1000,
    )
    return [
        {
            "stage": r.data.tags.get("facelandmarks.stage", r.info.run_name),
            "run_id": r.info.run_id,
            "name": r.info.run_name,
            "status": r.info.status,
            "url": run_url(ui_base, exp_id, r.info.run_id),
        }
        for r in runs
    ]


def tag_parent_run(parent_run_id: str, flow_run_id: str | None, flow_run_url: str | None) -> None:
    """Tag the MLflow parent run with the Prefect flow run that made it (id and UI URL when known)."""
    import mlflow

    client = mlflow.MlflowClient()
    if flow_run_id:
        client.set_tag(parent_run_id, PREFECT_FLOW_RUN_TAG, flow_run_id)
    if flow_run_url:
        client.set_tag(parent_run_id, PREFECT_FLOW_RUN_URL_TAG, flow_run_url)
