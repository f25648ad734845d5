"""Training speed: images per second of the default configuration, and the wall time of a full ``dvc repro``.

Images per second come from the training stages' own reports (``reports/pretrain.json``,
``reports/finetune.json``), measured during the real training of the default params. The wall time of a
full pipeline is measured by running ``facelandmarks repro --force`` (every stage, one MLflow parent run)
when asked (``python -m benchmarks.run --repro``; it retrains everything); otherwise it is read from the MLflow
store (:func:`last_full_pipeline`: the latest finished parent run in which every stage from ``crop`` to
``register`` ran), or carried over from ``benchmarks/results.json`` with the date it was measured.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["STAGE_REPORTS", "FULL_PIPELINE_STAGES", "find_throughput", "last_full_pipeline", "training_throughput",
           "time_repro"]

log = logging.getLogger(__name__)

#: Training stage -> its metrics file.
STAGE_REPORTS = {"pretrain": Path("reports/pretrain.json"), "finetune": Path("reports/finetune.json")}

#: The stages a parent run must hold (as child runs) to count as a whole pipeline (``download`` logs no run).
FULL_PIPELINE_STAGES = ("crop", "augment", "pretrain", "finetune", "evaluate", "register")

#: Keys under which a training report may give its throughput (first found wins).
THROUGHPUT_KEYS = ("train_images_per_second", "images_per_second", "train_images_per_s", "images_per_s")


def find_throughput(report: dict) -> float | None:
    """Training images per second in a stage report (searched recursively under :data:`THROUGHPUT_KEYS`).

    Returns:
        The first value found (depth-first, keys in :data:`THROUGHPUT_KEYS` order), or None.
    """
    if not isinstance(report, dict):
        return None
    for key in THROUGHPUT_KEYS:
        v = report.get(key)
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    for v in report.values():
        found = find_throughput(v) if isinstance(v, dict) else None
        if found is not None:
            return found
    return None


def _field(report: dict, *keys: str):
    for k in keys:
        if k in report:
            return report[k]
    return None


def training_throughput(reports: dict[str, Path] | None = None) -> dict:
    """Images per second of each training stage, from its report.

    Args:
        reports: stage -> report path (:data:`STAGE_REPORTS`).
    Returns:
        ``{stage: {"images_per_s", "report", "device", "train_s", "threads", "epochs", "backbone", "input_size",
        "stopped_by_time_cap", "max_minutes"} or {"missing": reason}}``. The training stages count augmented faces
        per second of epoch time (validation included), on the device and threads they ran with;
        ``stopped_by_time_cap`` says the stage's ``max_minutes`` safety cap ended its training before the epochs the
        params ask for (its model is then not the run the params describe).
    """
    out = {}
    for stage, path in (reports or STAGE_REPORTS).items():
        p = Path(path)
        if not p.is_file():
            out[stage] = {"missing": f"{p} not found (run `dvc repro`)"}
            continue
        try:
            report = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            out[stage] = {"missing": f"{p}: unreadable ({e})"}
            continue
        ips = find_throughput(report)
        out[stage] = {
            "images_per_s": ips,
            "report": str(p),
            "device": _field(report, "device"),
            "train_s": _field(report, "train_seconds", "wall_s"),
            "threads": _field(report, "threads"),
            "epochs": _field(report, "epochs_run"),
            "backbone": _field(report, "backbone"),
            "input_size": _field(report, "input_size"),
            "stopped_by_time_cap": bool(_field(report, "stopped_by_time_cap")),
            "max_minutes": _field(report, "max_minutes"),
        }
        if ips is None:
            out[stage]["missing"] = f"{p} gives no images-per-second figure (keys tried: {', '.join(THROUGHPUT_KEYS)})"
    return out


def time_repro(command: list[str] | None = None, cwd: str | os.PathLike = ".") -> dict:
    """Run the whole pipeline and time it.

    Args:
        command: the pipeline command (default ``facelandmarks repro --force``: every stage reruns).
    Returns:
        ``{"wall_s", "command", "returncode"}``.
    Raises:
        RuntimeError: the pipeline failed (the message gives its exit code).
    """
    exe = Path(sys.executable).with_name("facelandmarks")
    cmd = command or [str(exe) if exe.exists() else "facelandmarks", "repro", "--force"]
    t = time.perf_counter()
    rc = subprocess.call(cmd, cwd=cwd)
    wall = time.perf_counter() - t
    if rc != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {rc} after {wall:.0f} s")
    return {"wall_s": wall, "command": " ".join(cmd), "returncode": rc}


def last_full_pipeline(tracking_uri: str, experiment: str, stages: tuple[str, ...] = FULL_PIPELINE_STAGES) -> dict | None:
    """The wall time of the latest whole pipeline in the MLflow store.

    A whole pipeline is a FINISHED parent run (tag ``facelandmarks.pipeline``) with a FINISHED child run of every
    stage in ``stages`` (tag ``facelandmarks.stage``): ``facelandmarks repro`` after a change that reran every
    stage. Its wall time is the parent's end minus its start (what ``make repro`` spends after the install and
    ``dvc pull``).

    Args:
        tracking_uri: the MLflow store (e.g. ``sqlite:///mlflow.db``).
        experiment: the experiment name (params.yaml ``tracking.experiment``).
        stages: the child stages required.
    Returns:
        ``{"wall_s", "run_id", "run_name", "started" (UTC ISO), "stages", "source": "mlflow"}``, or None when the
        store, the experiment or such a run is missing.
    """
    import datetime as dt

    import mlflow

    from facelandmarks.mlflow_runs import PIPELINE_TAG, STAGE_TAG

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        exp = client.get_experiment_by_name(experiment)
    except Exception as e:  # a store that cannot be opened: nothing measured there
        log.warning("MLflow store %s: %s", tracking_uri, e)
        return None
    if exp is None:
        return None
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{PIPELINE_TAG}` = 'true' and "
                                 "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=200)
    for parent in parents:
        info = parent.info
        if not info.end_time:
            continue
        children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{info.run_id}' "
                                      "and attributes.status = 'FINISHED'", max_results=1000)
        ran = {c.data.tags.get(STAGE_TAG) for c in children}
        if all(st in ran for st in stages):
            started = dt.datetime.fromtimestamp(info.start_time / 1000, dt.timezone.utc)
            return {"wall_s": (info.end_time - info.start_time) / 1000.0, "run_id": info.run_id,
                    "run_name": info.run_name, "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "stages": list(stages), "source": "mlflow"}
    return None
