"""``facelandmarks schedule``: serve the retraining flow on a schedule (cron, weekly by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["schedule"]


def schedule(
    cron: Annotated[str | None, typer.Option(help="cron schedule, e.g. '0 3 * * 0' (Sundays 03:00); "
                                                 "default: params.yaml retrain.cron")] = None,
    interval: Annotated[float | None, typer.Option(help="seconds between runs, instead of --cron")] = None,
    timezone: Annotated[str | None, typer.Option(help="time zone of --cron, e.g. Europe/Berlin (default UTC)")] = None,
    name: Annotated[str | None, typer.Option(help="deployment name (default: params.yaml retrain.deployment)")] = None,
    project_dir: Annotated[Path, typer.Option(help="the project's root (params.yaml, dvc.yaml)")] = Path("."),
    set_: Annotated[list[str], typer.Option("--set", "-S", help="params override key=value for every run")] = [],
    target: Annotated[list[str], typer.Option("--target", "-t", help="stage to reproduce (repeat; default all)")] = [],
    force: Annotated[bool, typer.Option(help="rerun stages even if unchanged")] = False,
    pull: Annotated[bool, typer.Option(help="`dvc pull` before each run")] = True,
    build: Annotated[bool | None, typer.Option(help="build a Bento when the champion changes "
                                                    "(default: params.yaml retrain.build_bento)")] = None,
) -> None:
    """Serve the ``retrain`` flow on a schedule until stopped (Ctrl-C / SIGTERM).

    Needs a Prefect server: ``prefect server start --host 127.0.0.1 --port 4200`` and
    ``export PREFECT_API_URL=http://127.0.0.1:4200/api``.
    """
    from facelandmarks.flows.schedule import ScheduleError, serve_retrain

    parameters = {"overrides": list(set_), "targets": list(target), "force": force, "pull": pull, "build": build}
    try:
        serve_retrain(project_dir, cron=cron, interval_s=interval, timezone=timezone, name=name, parameters=parameters)
    except (ScheduleError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
