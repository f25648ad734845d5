"""The retraining flow (Prefect 3): pull the data, reproduce the pipeline, decide, ship.

Steps of one flow run, in the project folder ``project_dir``:

1. ``dvc pull`` of the data pins (params ``retrain.pull_targets``), retried on failure;
2. the flow's params ``overrides`` (``key=value``, as ``dvc exp run -S``) written into params.yaml;
3. ``dvc repro [targets]`` inside ONE MLflow parent run (``FACELANDMARKS_PARENT_RUN_ID``), so every
   stage's child run nests under it; the flow run gets a link artifact to that parent run, and the
   parent run the tags ``prefect.flow_run_id`` / ``prefect.flow_run_url``. A failed stage raises
   :class:`~facelandmarks.flows.dvc_steps.StageFailed`: the flow run is Failed, the parent run
   FAILED, and DVC never reaches ``register``, so no model is promoted;
4. the new metrics and the ``register`` stage's decision are read from their reports; whether the
   alias ``champion`` moved is read from the MLflow model registry itself (before vs after);
5. when the champion changed (or the champion has no Bento yet), ``bentoml build`` makes a new Bento,
   labelled with the champion's version.

The flow returns a JSON-able dict (see :func:`retrain`) and leaves a markdown summary artifact.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from facelandmarks.flows.bento import bentos_with_labels, build_bento
from facelandmarks.flows.champion import champion_version, outcome_settings
from facelandmarks.flows.config import load_retrain_params
from facelandmarks.flows.dvc_steps import dvc_pull, dvc_repro, set_params
from facelandmarks.flows.mlflow_links import child_runs, mlflow_ui_base, run_url, tag_parent_run
from facelandmarks.flows.outcome import read_json, snapshot, updated
from facelandmarks.flows.summary import summary_markdown
from facelandmarks.params import load_params

__all__ = ["retrain"]


def _flow_run_identity() -> tuple[str | None, str | None]:
    from prefect.runtime import flow_run

    return (str(flow_run.id) if flow_run.id else None), flow_run.ui_url


@flow(name="retrain", log_prints=True, validate_parameters=True)
def retrain(
    project_dir: str = ".",
    overrides: list[str] | None = None,
    targets: list[str] | None = None,
    force: bool = False,
    pull: bool = True,
    build: bool | None = None,
) -> dict[str, Any]:
    """Retrain: ``dvc pull``, ``dvc repro`` with overrides, read metrics and decision, build a Bento.

    Args:
        project_dir: the project's root (params.yaml, dvc.yaml); absolute in a deployment.
        overrides: params overrides ``key=value`` (``train.epochs=30``, ``download.datasets.0.max_photos=50``),
            written into params.yaml before ``dvc repro`` (they stay there, as with ``dvc exp run``).
        targets: stages to reproduce (default: the whole graph, download ... register).
        force: rerun stages even when DVC finds them unchanged (``dvc repro --force``).
        pull: run ``dvc pull`` first.
        build: build a Bento when the champion changed; None = params ``retrain.build_bento``.
    Returns:
        ``flow_run_id``; ``mlflow``: ``parent_run_id``, ``experiment_id``, ``url`` and ``children`` (one
        per stage run: ``stage``, ``run_id``, ``status``, ``url``); ``stages``: ``ran`` / ``skipped``;
        ``updated_reports``; ``metrics`` (the evaluate report, or None); ``decision`` (the register
        report when register ran in this run, else None); ``champion``: ``model``, ``before``, ``after``,
        ``changed``; ``bento`` (the new Bento's tag, or None).
    Raises:
        StageFailed: a stage failed (nothing after it ran; no model promoted, no Bento built).
        facelandmarks.flows.shell.CommandFailed: ``dvc pull`` still failed after its retries, or the
            Bento build failed.
        KeyError, ValueError: a bad override or an invalid params section.
    """
    from facelandmarks.mlflow_runs import configure, pipeline_run, tracking_uri

    log = get_run_logger()
    root = Path(project_dir).resolve()
    if not (root / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{root}: no dvc.yaml here; pass the project's root as project_dir")
    flow_run_id, flow_run_url = _flow_run_identity()
    with contextlib.chdir(root):  # the stages, params.yaml and relative store paths resolve from the root
        cfg = load_retrain_params(root / "params.yaml")
        if pull:
            dvc_pull.with_options(retries=cfg.pull_retries, retry_delay_seconds=cfg.retry_delay_seconds)(
                str(root), cfg.pull_targets, cfg.pull_timeout_s
            )
        set_params(str(root), overrides or [])
        params = load_params(root / "params.yaml")
        experiment_id = configure(params)
        ui = mlflow_ui_base(tracking_uri(params), cfg.mlflow_ui)
        out = outcome_settings(params, str(root / "params.yaml"))
        champion_before = champion_version(out.model_name, out.alias)
        reports = [out.metrics, out.decision]
        before = snapshot(root, reports)

        with pipeline_run(params) as parent_id:
            url = run_url(ui, experiment_id, parent_id)
            tag_parent_run(parent_id, flow_run_id, flow_run_url)
            create_link_artifact(
                link=url, link_text=f"MLflow pipeline run {parent_id}", key="mlflow-pipeline-run",
                description="The MLflow parent run of this retraining: one child run per stage.",
            )
            log.info("MLflow parent run %s: %s", parent_id, url)
            stages = dvc_repro.with_options(retries=cfg.repro_retries, retry_delay_seconds=cfg.retry_delay_seconds)(
                str(root), parent_id, targets or [], force
            )
        children = child_runs(parent_id, ui)

        fresh = updated(before, snapshot(root, reports))
        metrics = read_json(root / out.metrics)
        decision = read_json(root / out.decision) if out.decision in fresh else None
        champion_after = champion_version(out.model_name, out.alias)
        changed = champion_after is not None and champion_after != champion_before
        log.info("@%s of %s: version %s -> %s (%s)", out.alias, out.model_name, champion_before, champion_after,
                 "changed" if changed else "unchanged")

        bento = None
        if (cfg.build_bento if build is None else build) and champion_after is not None:
            labels = {"champion_version": champion_after, "registered_model": out.model_name}
            if changed or not bentos_with_labels(root, labels):
                bento = build_bento.with_options(retries=cfg.bento_retries, retry_delay_seconds=cfg.retry_delay_seconds)(
                    str(root), cfg.bentofile, {**labels, "mlflow_parent_run": parent_id}
                )

    result = {
        "flow_run_id": flow_run_id,
        "mlflow": {"parent_run_id": parent_id, "experiment_id": experiment_id, "url": url, "children": children},
        "stages": stages,
        "updated_reports": fresh,
        "metrics": metrics,
        "decision": decision,
        "champion": {"model": out.model_name, "alias": out.alias, "before": champion_before, "after": champion_after,
                     "changed": changed},
        "bento": bento,
    }
    create_markdown_artifact(summary_markdown(result), key="retrain-summary",
                             description="What this retraining ran, measured and decided.")
    return result
