"""Serving the retraining flow on a schedule (a Prefect deployment polled by this process).

Schedules fire only against a real Prefect server: Prefect's temporary per-process server registers the
deployment but never creates its scheduled runs. So :func:`serve_retrain` requires ``PREFECT_API_URL``
and checks that the server answers before it serves.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

__all__ = ["ScheduleError", "prefect_api_url", "check_server", "make_schedule", "serve_retrain"]

START_SERVER_HELP = (
    "start one with `prefect server start --host 127.0.0.1 --port 4200` and point this shell at it with "
    "`export PREFECT_API_URL=http://127.0.0.1:4200/api`"
)


class ScheduleError(RuntimeError):
    """The schedule cannot be served (no Prefect server, bad schedule); the message says what to do."""


def prefect_api_url() -> str | None:
    """The Prefect API URL in effect (``PREFECT_API_URL`` from the environment or the Prefect profile)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def check_server(api_url: str | None, timeout_s: float = 10.0) -> str:
    """Make sure a Prefect server answers at ``api_url`` (``GET <api_url>/health``); returns the URL.

    Raises:
        ScheduleError: no URL set, or the server does not answer; the message says how to start one.
    """
    import httpx

    if not api_url:
        raise ScheduleError(f"PREFECT_API_URL is not set: schedules need a running Prefect server; {START_SERVER_HELP}")
    try:
        r = httpx.get(api_url.rstrip("/") + "/health", timeout=timeout_s)
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise ScheduleError(f"no Prefect server answers at PREFECT_API_URL={api_url} ({e}); {START_SERVER_HELP}") from e
    return api_url


def make_schedule(cron: str | None, interval_s: float | None, timezone: str | None = None):
    """A Prefect schedule: every ``interval_s`` seconds, else the ``cron`` string (in ``timezone``).

    Raises:
        ScheduleError: both or neither given, an interval <= 0, or an invalid cron string.
    """
    from prefect.schedules import Cron, Interval

    if (cron is None) == (interval_s is None):
        raise ScheduleError("give exactly one of a cron string or an interval")
    if interval_s is not None:
        if interval_s <= 0:
            raise ScheduleError(f"interval must be > 0 seconds, got {interval_s}")
        return Interval(timedelta(seconds=interval_s), timezone=timezone)
    try:
        return Cron(cron, timezone=timezone)
    except ValueError as e:
        raise ScheduleError(f"invalid cron schedule {cron!r}: {e}") from e


def serve_retrain(
    project_dir: str | os.PathLike,
    *,
    cron: str | None = None,
    interval_s: float | None = None,
    timezone: str | None = None,
    name: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> None:
    """Serve the ``retrain`` flow as deployment ``retrain/<name>`` until this process is stopped.

    Runs start in a subprocess each, in ``project_dir``, with ``parameters`` (see
    :func:`facelandmarks.flows.retrain.retrain`); at most one at a time (two ``dvc repro`` in one
    workspace would collide), late runs wait. Defaults come from params ``retrain`` of ``project_dir``
    (``cron``, ``timezone``, ``deployment``). SIGTERM stops serving and pauses the schedule.

    Raises:
        ScheduleError: no reachable Prefect server, or a bad schedule.
        FileNotFoundError: ``project_dir`` has no dvc.yaml.
    """
    from prefect.deployments.runner import EntrypointType

    from facelandmarks.flows.retrain import load_retrain_params, retrain

    root = Path(project_dir).resolve()
    if not (root / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{root}: no dvc.yaml here; pass the project's root with --project-dir")
    check_server(prefect_api_url())
    cfg = load_retrain_params(root / "params.yaml")
    if interval_s is None and cron is None:
        cron = cfg.cron
    schedule = make_schedule(cron, interval_s, timezone or cfg.timezone)
    retrain.serve(
        name=name or cfg.deployment,
        schedules=[schedule],
        parameters={**(parameters or {}), "project_dir": str(root)},
        description=f"Retrain the facelandmarks pipeline in {root} (dvc pull, dvc repro, register, bentoml build).",
        tags=["facelandmarks", "retrain"],
        limit=1,
        paused=False,  # a restart resumes the schedule that the last shutdown paused
        pause_on_shutdown=True,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
