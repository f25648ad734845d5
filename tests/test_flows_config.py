"""The retraining flow's settings, schedules and command line (fast: no Prefect server, no stage)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facelandmarks.flows.retrain import RetrainParams, load_retrain_params
from facelandmarks.flows.steps import StageFailed, parse_repro_log
from facelandmarks.flows.schedule import ScheduleError, check_server, make_schedule
from facelandmarks.flows.steps import CommandFailed, run_command

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_repo_params_retrain_section_is_valid():
    cfg = load_retrain_params(ROOT / "params.yaml")
    assert cfg.cron == "0 3 * * 0"  # weekly by default, as the README says
    assert cfg.pull_retries >= 1 and "data.dvc" in cfg.pull_targets


def test_retrain_section_errors_name_file_and_key(tmp_path):
    p = tmp_path / "params.yaml"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["retrain"]["cron"] = "every sunday"
    p.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"params.yaml.*retrain(.|\n)*cron"):
        load_retrain_params(p)
    params["retrain"] = {"pull_retry": 3}  # typo of pull_retries
    p.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="pull_retry"):
        load_retrain_params(p)
    del params["retrain"]
    p.write_text(yaml.safe_dump(params))
    assert load_retrain_params(p) == RetrainParams()


def test_make_schedule_cron_and_interval():
    weekly = make_schedule("0 3 * * 0", None, "Europe/Berlin")
    assert weekly.cron == "0 3 * * 0" and weekly.timezone == "Europe/Berlin"
    every = make_schedule(None, 5)
    assert every.interval.total_seconds() == 5
    for cron, interval in [(None, None), ("0 3 * * 0", 5)]:
        with pytest.raises(ScheduleError, match="exactly one"):
            make_schedule(cron, interval)
    with pytest.raises(ScheduleError, match="invalid cron"):
        make_schedule("61 3 * * 0", None)
    with pytest.raises(ScheduleError, match="> 0"):
        make_schedule(None, 0)


def test_check_server_explains_how_to_start_one():
    with pytest.raises(ScheduleError, match=r"prefect server start --host 127\.0\.0\.1"):
        check_server(None)
    url = f"http://127.0.0.1:{_free_port()}/api"
    with pytest.raises(ScheduleError, match="no Prefect server answers"):
        check_server(url, timeout_s=2)


def test_schedule_command_refuses_without_server(tmp_path):
    """Without a real server, scheduled runs would never fire: the command must say so and exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    exe = shutil.which("facelandmarks", path=str(Path(sys.executable).parent)) or "facelandmarks"
    proc = subprocess.run([exe, "schedule", "--cron", "0 3 * * 0", "--project-dir", str(ROOT)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "PREFECT_API_URL is not set" in proc.stderr and "prefect server start" in proc.stderr
    proc = subprocess.run([exe, "schedule", "--project-dir", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no dvc.yaml" in proc.stderr


# Output of `dvc repro` (DVC 3.67) as the flow reads it: one stage cached, one run, one failed.
REPRO_OUTPUT = """\
'data.dvc' didn't change, skipping
Stage 'download' didn't change, skipping
Running stage 'crop':
> python pipelines/crop.py
Traceback (most recent call last):
ValueError: params.yaml: invalid section 'crop'
ERROR: failed to reproduce 'crop': failed to run: python pipelines/crop.py, exited with 1
""".splitlines()


def test_parse_repro_log_names_failed_stage():
    info = parse_repro_log(REPRO_OUTPUT)
    assert info == {"ran": [], "skipped": ["download"], "failed": "crop"}
    ok = ["Running stage 'download':", "> python pipelines/download.py",
          "Stage 'crop' is cached - skipping run, checking out outputs", "Running stage 'augment':"]
    assert parse_repro_log(ok) == {"ran": ["download", "augment"], "skipped": ["crop"], "failed": None}
    err = StageFailed("crop", ["download"], CommandFailed(["dvc", "repro"], 255, REPRO_OUTPUT))
    assert "stage 'crop' failed" in str(err) and "download" in str(err) and "no model registered" in str(err)


def test_run_command_streams_output_and_raises_with_tail(tmp_path):
    lines = run_command([sys.executable, "-c", "print('a'); print('b')"], cwd=tmp_path)
    assert lines == ["a", "b"]
    with pytest.raises(CommandFailed, match=r"status 3(.|\n)*boom") as e:
        run_command([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], cwd=tmp_path)
    assert e.value.returncode == 3 and e.value.tail == ["boom"]
    with pytest.raises(CommandFailed, match="timeout") as e:
        run_command([sys.executable, "-c", "import time; print('start', flush=True); time.sleep(30)"],
                    cwd=tmp_path, timeout_s=3)
    assert e.value.returncode is None and e.value.tail == ["start"]


def test_run_command_puts_this_python_first_on_path(tmp_path):
    """`python` in a dvc.yaml cmd must be this environment's, even from a non-activated venv."""
    out = run_command(["sh", "-c", "python -c 'import sys; print(sys.executable)'"], cwd=tmp_path,
                      env={"PATH": "/usr/bin:/bin"})
    assert Path(out[-1]).parent == Path(sys.executable).parent
