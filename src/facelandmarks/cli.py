"""The ``facelandmarks`` command line (typer).

``facelandmarks repro`` runs the whole pipeline as one MLflow parent run; ``facelandmarks stage NAME``
runs one DVC stage's code directly; ``predict``, ``live``, ``export`` and ``schedule`` are the user-facing tools.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import threading
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

#: DVC stage name -> module whose ``main()`` runs it (the same code the ``pipelines/`` scripts call).
STAGES = {
    "download": "facelandmarks.data.stage",
    "crop": "facelandmarks.crop.stage",
    "augment": "facelandmarks.augment.stage",
    "pretrain": "facelandmarks.train.pretrain_stage",
    "finetune": "facelandmarks.train.finetune_stage",
    "evaluate": "facelandmarks.evaluate.stage",
    "register": "facelandmarks.registry.stage",
}


@app.command()
def stage(name: Annotated[str, typer.Argument(help=f"one of {', '.join(STAGES)}")]) -> None:
    """Run one stage's code now, without DVC's caching (reads ./params.yaml)."""
    if name not in STAGES:
        raise typer.BadParameter(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
    importlib.import_module(STAGES[name]).main()


@app.command()
def repro(
    set_: Annotated[list[str], typer.Option("--set", "-S", help="params override key=value, as in `dvc exp run -S`")] = [],
    targets: Annotated[list[str], typer.Argument(help="stages to reproduce (default: all)")] = None,
    force: Annotated[bool, typer.Option(help="rerun stages even if unchanged")] = False,
) -> None:
    """Run ``dvc repro`` as ONE MLflow parent run: every stage's run nests under it.

    With ``-S key=value`` the overrides are written to params.yaml first (and recorded by DVC in
    dvc.lock), so the run is reproducible from the repository state.
    """
    from facelandmarks.mlflow_runs import pipeline_run

    if set_:
        from facelandmarks.params_override import apply_overrides

        apply_overrides("params.yaml", set_)
    from facelandmarks.flows.steps import with_python_on_path

    # this environment's dvc and python, even when the venv is not activated (`make repro`)
    cmd = [sys.executable, "-m", "dvc", "repro", *(targets or [])] + (["--force"] if force else [])
    run_id = None
    try:
        with pipeline_run() as run_id:
            env = with_python_on_path({**os.environ, "FACELANDMARKS_PARENT_RUN_ID": run_id})
            rc = run_interruptible(cmd, env)
            if rc != 0:
                raise SystemExit(rc)
    except Interrupted as e:
        if run_id is not None:
            _end_killed(run_id)
        typer.echo(f"facelandmarks repro: stopped by signal {e.signum}; MLflow run {run_id} and its running "
                   "stage runs marked KILLED", err=True)
        raise SystemExit(128 + e.signum) from None


class Interrupted(Exception):
    """SIGTERM or SIGINT reached a command that runs a child process (``signum``: which)."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


def run_interruptible(cmd: list[str], env: dict[str, str], grace_s: float = 60.0) -> int:
    """Run ``cmd`` in a process group of its own and wait; a SIGTERM or SIGINT to this process is passed to
    the whole group (``dvc`` and the stage it runs), so nothing keeps running after ``kill`` or Ctrl-C.

    Args:
        cmd: the command; env: its environment.
        grace_s: seconds the group gets to exit after the signal before SIGKILL.
    Returns:
        the exit status of ``cmd``.
    Raises:
        Interrupted: a signal came; the group has exited when this is raised. (Called outside the main thread,
            it installs no handlers: Python gives signals to the main thread only.)
    """
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
        raise Interrupted(signum)

    # Python delivers signals to the main thread only; elsewhere (a caller's thread) the caller handles them
    main = threading.current_thread() is threading.main_thread()
    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        return proc.wait()
    except Interrupted:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _end_killed(parent_run_id: str) -> None:
    """Mark an interrupted pipeline's MLflow parent run and its still-RUNNING stage runs KILLED (a stage process
    that died of the signal could not end its own run, which the MLflow UI would show running forever)."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    for child in client.search_runs([parent.info.experiment_id],
                                    filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                    "attributes.status = 'RUNNING'"):
        client.set_terminated(child.info.run_id, "KILLED")
    client.set_terminated(parent_run_id, "KILLED")


# user-facing tools, each in its own module (heavy imports happen inside the commands)
from facelandmarks.commands.bento import bento  # noqa: E402
from facelandmarks.commands.export import export  # noqa: E402
from facelandmarks.commands.live import live  # noqa: E402
from facelandmarks.commands.predict import predict  # noqa: E402
from facelandmarks.commands.schedule import schedule  # noqa: E402

app.command(name="predict")(predict)
app.command(name="live")(live)
app.command(name="export")(export)
app.command(name="bento")(bento)
app.command(name="schedule")(schedule)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
