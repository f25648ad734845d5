"""The retraining flow (Prefect) and its params: the `retrain` section of params.yaml.

No DVC stage depends on the `retrain` section, so changing it never invalidates a stage.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from pydantic import Field, field_validator

from facelandmarks.flows.outcome import (
    champion_version,
    outcome_settings,
    read_json,
    snapshot,
    summary_markdown,
    updated,
)
from facelandmarks.flows.steps import (
    bentos_with_labels,
    build_bento,
    dvc_pull,
    dvc_repro,
    set_params,
)
from facelandmarks.mlflow_runs import (
    child_runs,
    mlflow_ui_base,
    run_url,
    tag_parent_run,
)
from facelandmarks.params import StrictModel, load_params, section

__all__ = ["RetrainParams", "load_retrain_params", "retrain"]


class RetrainParams(StrictModel):
    """params.yaml ``retrain``: schedule defaults, retries, links and the Bento build.

    Attributes:
        deployment: name of the Prefect deployment that ``facelandmarks schedule`` serves.
        cron: default schedule (cron syntax, 5 fields); ``"0 3 * * 0"`` = Sundays 03:00.
        timezone: IANA time zone of ``cron`` (e.g. ``Europe/Berlin``); UTC by default.
        pull_targets: what ``dvc pull`` brings up to date before each run: the ``.dvc`` files that pin
            the raw data. Empty = every DVC-tracked file, stage outputs included (then every output
            in dvc.lock must be in the remote, or the pull fails).
        pull_retries: extra attempts of a failed ``dvc pull`` (network and remote hiccups).
        pull_timeout_s: a pull that takes longer is killed and counts as a failed attempt.
        retry_delay_seconds: wait before each retry (seconds).
        repro_retries: extra attempts of a failed ``dvc repro``. 0 by default: a failed stage fails the
            run at once (DVC keeps the stages that finished, so a manual rerun resumes there).
        build_bento: build a new Bento (``bentoml build``) when the champion changed.
        bento_retries: extra attempts of a failed ``bentoml build``.
        bentofile: the bentofile, relative to the project root.
        mlflow_ui: base URL of the MLflow UI that run links point to (``mlflow ui`` serves
            http://127.0.0.1:5000 by default); when the tracking URI is an http(s) server, that wins.
    """

    deployment: str = "retrain"
    cron: str = "0 3 * * 0"
    timezone: str | None = None
    pull_targets: list[str] = ["data.dvc"]
    pull_retries: int = Field(3, ge=0)
    pull_timeout_s: float = Field(3600, gt=0)
    retry_delay_seconds: float = Field(30, ge=0)
    repro_retries: int = Field(0, ge=0)
    build_bento: bool = True
    bento_retries: int = Field(1, ge=0)
    bentofile: str = "bentofile.yaml"
    mlflow_ui: str = "http://127.0.0.1:5000"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from prefect.schedules import validate_cron_string

        return validate_cron_string(v)


def load_retrain_params(params_path: str | os.PathLike = "params.yaml") -> RetrainParams:
    """The validated ``retrain`` section of ``params_path``; defaults when the section is absent.

    Raises:
        FileNotFoundError: no params file.
        ValueError: the section is invalid (the message names the file and the key).
    """
    params = load_params(params_path)
    if "retrain" not in params:
        return RetrainParams()
    return section(params, "retrain", RetrainParams, str(Path(params_path)))


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
        facelandmarks.flows.steps.CommandFailed: ``dvc pull`` still failed after its retries, or the
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
