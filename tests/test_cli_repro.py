"""`facelandmarks repro` stopped by a signal: nothing keeps running and MLflow shows the run KILLED."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def test_run_interruptible_returns_the_exit_status_in_any_thread():
    """From a worker thread (where Python refuses signal handlers) it runs the command without them."""
    import threading

    from facelandmarks.cli import run_interruptible

    got = []
    t = threading.Thread(target=lambda: got.append(run_interruptible([sys.executable, "-c", "import sys; sys.exit(3)"],
                                                                    dict(os.environ))))
    t.start()
    t.join(60)
    assert got == [3]
    assert run_interruptible([sys.executable, "-c", "pass"], dict(os.environ)) == 0


def _processes_in(root: Path) -> list[int]:
    """Pids of processes whose working directory is inside ``root`` (Linux /proc)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(p / "cwd").startswith(str(root)):
                    pids.append(int(p.name))
    return pids


@pytest.mark.slow
@pytest.mark.needs_data
def test_sigterm_stops_the_stage_and_marks_the_runs_killed(tiny_project):
    import mlflow

    root = tiny_project.root
    exe = Path(sys.executable).with_name("facelandmarks")
    proc = subprocess.Popen([str(exe), "repro"], cwd=root, env=tiny_project.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    client = mlflow.MlflowClient(tracking_uri=tiny_project.tracking_uri)
    running: list = []
    deadline = time.monotonic() + 300
    try:
        while not running and time.monotonic() < deadline and proc.poll() is None:  # wait for a stage's own run
            time.sleep(1.0)
            with contextlib.suppress(Exception):  # the store is created by the first run
                exp = client.get_experiment_by_name(tiny_project.params()["tracking"]["experiment"])
                running = [r for r in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
                           if r.data.tags.get("mlflow.parentRunId")]
        assert running, f"no stage run started (exit {proc.poll()}): {proc.stderr.read()[-2000:] if proc.poll() is not None else ''}"
        assert len(_processes_in(root)) >= 3  # repro, dvc, the stage
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert rc == 128 + signal.SIGTERM, err[-2000:]
    assert "marked KILLED" in err
    time.sleep(1.0)
    assert _processes_in(root) == []  # dvc and the stage it ran stopped too
    runs = client.search_runs([running[0].info.experiment_id])
    parent = client.get_run(running[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED"
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert client.get_run(running[0].info.run_id).info.status == "KILLED"
