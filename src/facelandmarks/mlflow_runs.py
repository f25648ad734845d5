"""MLflow tracking: one parent run per pipeline run (``dvc repro``), one child run per stage.

Where runs go: ``MLFLOW_TRACKING_URI`` when set, else ``tracking.tracking_uri`` of params.yaml (default
``sqlite:///mlflow.db``, with artifacts under ``tracking.artifact_location``); experiment
``tracking.experiment``.

Which parent a stage's run joins (:func:`find_or_create_parent`), first match wins:

1. the run id in the environment variable ``FACELANDMARKS_PARENT_RUN_ID`` (set by ``facelandmarks repro``, which
   opens the parent with :func:`pipeline_run`, by a Prefect flow, or by a user);
2. the parent run of the same ``dvc repro`` / ``dvc exp run`` process: every stage of one DVC invocation
   runs under one ``dvc`` process, whose host, pid and start time form the tag ``facelandmarks.pipeline_key``;
3. the newest RUNNING run tagged ``facelandmarks.pipeline=true`` started less than 12 hours ago;
4. a new parent run, tagged ``facelandmarks.pipeline=true`` and named for the pipeline (e.g.
   ``pipeline mobilenetv3_small_100+heatmap 300w->infanface``), with all params logged.

Links to the MLflow UI and between a Prefect flow run and its MLflow runs (:func:`run_url`, :func:`child_runs`,
:func:`tag_parent_run`) live here too. While a stage runs, its parent is RUNNING; when the stage ends the parent is FINISHED again (FAILED if the
stage failed), so a finished pipeline leaves no run RUNNING. A parent named by ``FACELANDMARKS_PARENT_RUN_ID``
is left alone (its owner, e.g. a Prefect flow, ends it). A child run is tagged ``mlflow.parentRunId`` (the
MLflow UI nests it) and ``facelandmarks.stage``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "PARENT_ENV",
    "PIPELINE_TAG",
    "PIPELINE_KEY_TAG",
    "tracking_uri",
    "configure",
    "flatten_params",
    "flatten_metrics",
    "pipeline_name",
    "pipeline_key",
    "find_or_create_parent",
    "stage_run",
    "pipeline_run",
    "key_params",
    "log_to_parent",
    "EXPERIMENT_KIND",
    "mlflow_ui_base",
    "run_url",
    "child_runs",
    "tag_parent_run",
]

PARENT_ENV = "FACELANDMARKS_PARENT_RUN_ID"
PIPELINE_TAG = "facelandmarks.pipeline"
PIPELINE_KEY_TAG = "facelandmarks.pipeline_key"
STAGE_TAG = "facelandmarks.stage"
MAX_PARENT_AGE_S = 12 * 3600
#: MLflow 3's experiment-kind tag: the UI opens a ``custom_model_development`` experiment on its training runs
#: table (not the GenAI overview).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def tracking_uri(params: Mapping[str, Any]) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``params["tracking"]["tracking_uri"]`` (default ``sqlite:///mlflow.db``)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return str((params.get("tracking") or {}).get("tracking_uri", "sqlite:///mlflow.db"))


def configure(params: Mapping[str, Any]) -> str:
    """Point MLflow at the tracking store and experiment of ``params``; returns the experiment id.

    A new experiment gets ``tracking.artifact_location`` (made absolute) as its artifact root when the
    store is local (sqlite or a folder) and ``MLFLOW_TRACKING_URI`` is not set; a tracking server keeps its own.
    """
    import mlflow

    tracking = dict(params.get("tracking") or {})
    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    name = str(tracking.get("experiment", "facelandmarks"))
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = tracking.get("artifact_location")
        local = not os.environ.get("MLFLOW_TRACKING_URI") and (uri.startswith("sqlite:") or "://" not in uri)
        artifact_location = Path(location).resolve().as_uri() if (location and local) else None
        try:
            exp_id = client.create_experiment(name, artifact_location=artifact_location)
        except Exception:  # created meanwhile by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    exp = client.get_experiment(exp_id)
    if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        client.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _flatten(tree: Mapping[str, Any], sep: str, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> one level, keys joined with ``sep``."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, sep, key + sep))
        else:
            out[key] = v
    return out


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params -> ``{"train.lr": "0.002", ...}``; lists are written as their string form (at most 6000
    characters, MLflow's limit of a param value)."""
    return {k: str(v)[:6000] for k, v in _flatten(params, ".", prefix).items()}


def flatten_metrics(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1.0}`` (numbers only; None, NaN and booleans left out), for MLflow."""
    return {k: float(v) for k, v in _flatten(tree, "/", prefix).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def pipeline_name(params: Mapping[str, Any]) -> str:
    """Name of a parent run, from what the pipeline trains, e.g. ``pipeline mobilenetv3_small_100+heatmap
    300w->infanface``."""
    model = params.get("model") or {}
    parts = ["pipeline"]
    if model:
        parts.append(f"{model.get('backbone', '?')}+{model.get('head', '?')}")
    datasets = [_datasets_of(params.get(s) or {}) for s in ("pretrain", "finetune")]
    datasets = [d for d in datasets if d]
    if datasets:
        parts.append("->".join(datasets))
    return " ".join(parts)


def _datasets_of(stage: Mapping[str, Any]) -> str:
    """``"300w"`` or ``"300w+youtube_faces68"`` from a training stage's ``dataset`` (a name or a list) and
    ``mix`` (data sets mixed in), if any."""
    d = stage.get("dataset") or stage.get("datasets") or []
    names = [d] if isinstance(d, str) else [str(x) for x in d]
    mix = stage.get("mix") or {}
    names += [str(k) for k in (mix if isinstance(mix, Mapping) else [])]
    return "+".join(dict.fromkeys(names))


def key_params(params: Mapping[str, Any]) -> dict[str, str]:
    """The few params that tell pipelines apart in the MLflow runs table (parent runs): backbone, head,
    init, input size, loss (and heatmap-loss weight), training data and epochs of each training stage."""
    model = params.get("model") or {}
    train = params.get("train") or {}
    out = {
        "backbone": model.get("backbone"),
        "head": model.get("head"),
        "init": model.get("pretrained"),
        "input_size": (params.get("crop") or {}).get("size"),
        "loss": train.get("loss"),
        "heatmap_loss": train.get("heatmap_loss"),
        "flip_test": model.get("flip_test"),
    }
    for stage in ("pretrain", "finetune"):
        sp = params.get(stage) or {}
        if sp:
            out[f"{stage}_data"] = _datasets_of(sp)
            out[f"{stage}_epochs"] = sp.get("epochs")
    return {k: str(v) for k, v in out.items() if v is not None}


def log_to_parent(metrics: Mapping[str, float] | None = None, params: Mapping[str, str] | None = None) -> str | None:
    """Log headline metrics / params on the parent (pipeline) run of the active child run, so that the
    MLflow runs table compares whole pipelines at a glance.

    Returns:
        the parent run id, or None when the active run has no parent (nothing is logged).
    """
    import mlflow

    active = mlflow.active_run()
    parent_id = active.data.tags.get("mlflow.parentRunId") if active else None
    if not parent_id:
        return None
    client = mlflow.MlflowClient()
    batch_m = [mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0) for k, v in (metrics or {}).items()]
    existing = client.get_run(parent_id).data.params
    batch_p = [mlflow.entities.Param(k, str(v)) for k, v in (params or {}).items() if k not in existing]
    for i in range(0, max(len(batch_m), len(batch_p)), 100):
        client.log_batch(parent_id, metrics=batch_m[i : i + 100], params=batch_p[i : i + 100])
    return parent_id


def pipeline_key() -> str | None:
    """``host:pid:start`` of the ``dvc`` process this one runs under (``dvc repro`` / ``dvc exp run``), or
    None outside DVC."""
    try:
        import psutil

        for proc in psutil.Process().parents():
            try:
                cmd = proc.cmdline()
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            names = [os.path.basename(c) for c in cmd[:3]]
            is_dvc = "dvc" in names or any(a == "-m" and b == "dvc" for a, b in zip(cmd, cmd[1:]))
            if is_dvc and any(c in ("repro", "exp") for c in cmd):
                return f"{socket.gethostname()}:{proc.pid}:{int(proc.create_time())}"
    except Exception:
        return None
    return None


def find_or_create_parent(params: Mapping[str, Any], experiment_id: str) -> tuple[str, bool]:
    """The parent run id for a stage (rules in the module docstring).

    Returns:
        ``(run_id, owned)``: ``owned`` is False for a parent named by ``FACELANDMARKS_PARENT_RUN_ID`` (whoever set
        it manages its status); True otherwise (:func:`stage_run` marks it RUNNING / FINISHED / FAILED).
    Raises:
        mlflow.exceptions.MlflowException: ``FACELANDMARKS_PARENT_RUN_ID`` names no run.
    """
    import mlflow

    client = mlflow.MlflowClient()
    env_id = os.environ.get(PARENT_ENV)
    if env_id:
        client.get_run(env_id)
        return env_id, False
    key = pipeline_key()
    if key:
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'", max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if found:
            return found[0].info.run_id, True
    since = int((time.time() - MAX_PARENT_AGE_S) * 1000)
    found = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{PIPELINE_TAG}` = 'true' and attributes.status = 'RUNNING' "
                       f"and attributes.start_time > {since}"),
        max_results=1, order_by=["attributes.start_time DESC"],
    )
    if found:
        run_id = found[0].info.run_id
        if key:  # later stages of this DVC run find it by key
            client.set_tag(run_id, PIPELINE_KEY_TAG, key)
        return run_id, True
    return _create_parent(params, experiment_id, key), True


def _create_parent(params: Mapping[str, Any], experiment_id: str, key: str | None = None) -> str:
    """A new RUNNING parent run, named for the pipeline, with all params logged; returns its id."""
    import mlflow

    client = mlflow.MlflowClient()
    tags = {PIPELINE_TAG: "true", **({PIPELINE_KEY_TAG: key} if key else {})}
    run = client.create_run(experiment_id, tags=tags, run_name=pipeline_name(params))
    items = list(key_params(params).items()) + list(flatten_params(params).items())
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in items[i : i + 100]])
    return run.info.run_id


@contextlib.contextmanager
def stage_run(
    stage_name: str, params: Mapping[str, Any], run_name: str | None = None, tags: Mapping[str, str] | None = None
) -> Iterator[Any]:
    """Open a child run for one stage under the pipeline's parent run.

    Args:
        stage_name: DVC stage name (``pretrain``, ``finetune``, ``evaluate``, ...); tagged ``facelandmarks.stage``.
        params: the whole params.yaml mapping; all of it is logged (flattened) on the child run.
        run_name: what the run did, e.g. ``pretrain mobilenetv3_small_100+heatmap 300w`` (default: the stage name).
        tags: extra tags.
    Yields:
        The active child :class:`mlflow.ActiveRun` (use ``mlflow.log_*`` inside); its tag ``mlflow.parentRunId``
        names the parent. On an exception the child (and an owned parent) end FAILED and it propagates.
    """
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    exp_id = configure(params)
    client = mlflow.MlflowClient()
    parent_id, owned = find_or_create_parent(params, exp_id)
    if owned:
        client.update_run(parent_id, status="RUNNING")
    child = client.create_run(
        exp_id, run_name=run_name or stage_name,
        tags={MLFLOW_PARENT_RUN_ID: parent_id, STAGE_TAG: stage_name, **dict(tags or {})},
    )
    status = "FAILED"
    try:
        with mlflow.start_run(run_id=child.info.run_id, nested=mlflow.active_run() is not None) as active:
            mlflow.log_params(flatten_params(params))
            yield active
        status = "FINISHED"
    finally:
        if owned:
            client.set_terminated(parent_id, status)


@contextlib.contextmanager
def pipeline_run(params: Mapping[str, Any] | None = None, params_path: str | os.PathLike = "params.yaml") -> Iterator[str]:
    """Open a parent run for a whole pipeline run (``facelandmarks repro`` wraps ``dvc repro`` in it).

    Pass the yielded id to the stages as ``FACELANDMARKS_PARENT_RUN_ID``: their child runs nest under it and
    leave its status alone. The run is named by :func:`pipeline_name`, tagged ``facelandmarks.pipeline=true``,
    logs all params, stays RUNNING inside the block and ends FINISHED (FAILED on an exception, which
    propagates).

    Args:
        params: the params mapping (default: read from ``params_path``).
    Yields:
        The parent run id.
    """
    import mlflow

    from facelandmarks.params import load_params

    params = dict(params) if params is not None else load_params(params_path)
    exp_id = configure(params)
    client = mlflow.MlflowClient()
    run_id = _create_parent(params, exp_id)
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)


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
