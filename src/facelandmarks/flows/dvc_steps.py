"""The DVC steps of the retraining flow: ``dvc pull``, params overrides, ``dvc repro``.

Overrides are written into params.yaml before ``dvc repro`` (the same as ``facelandmarks repro -S``),
not run through ``dvc exp run -S``: that works without git commits or experiment refs, and the
workspace afterwards holds exactly the params that dvc.lock records, so the next run (scheduled or by
hand) starts from a consistent state. As with ``dvc exp run``, the overridden values stay in
params.yaml after the run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from prefect import get_run_logger, task

from facelandmarks.flows.shell import CommandFailed, run_command, tool
from facelandmarks.params_override import apply_overrides
from facelandmarks.mlflow_runs import PARENT_ENV

__all__ = ["StageFailed", "dvc_pull", "set_params", "dvc_repro", "parse_repro_log"]

_RUNNING = re.compile(r"^Running stage '([^']+)'")
_SKIPPED = re.compile(r"^Stage '([^']+)' (?:didn't change|is cached)")
_FAILED = re.compile(r"failed to reproduce '([^']+)'")


class StageFailed(RuntimeError):
    """A stage of ``dvc repro`` failed; DVC stopped there, so no later stage (register included) ran.

    Attributes:
        stage: the failed stage's name (None when DVC failed before any stage, e.g. a bad dvc.yaml).
        ran: stages that ran to completion before it.
    """

    def __init__(self, stage: str | None, ran: list[str], error: CommandFailed):
        self.stage, self.ran = stage, ran
        what = f"stage {stage!r} failed" if stage else "dvc repro failed"
        done = f"; stages completed before it: {', '.join(ran)}" if ran else ""
        super().__init__(f"{what}{done}. Nothing after it ran (no model registered or promoted).\n{error}")


def parse_repro_log(lines: Sequence[str]) -> dict[str, list[str] | str | None]:
    """What ``dvc repro`` did, from its output.

    Returns:
        ``{"ran": [...], "skipped": [...], "failed": name | None}``: stages in the order DVC named them
        (``ran`` excludes the failed one).
    """
    ran, skipped, failed = [], [], None
    for line in lines:
        line = line.strip()
        if m := _RUNNING.match(line):
            ran.append(m.group(1))
        elif m := _SKIPPED.match(line):
            skipped.append(m.group(1))
        elif m := _FAILED.search(line):
            failed = m.group(1)
    if failed in ran:
        ran.remove(failed)
    return {"ran": ran, "skipped": skipped, "failed": failed}


@task(name="dvc pull", retries=3, retry_delay_seconds=30)
def dvc_pull(project_dir: str, targets: Sequence[str] = (), timeout_s: float | None = None) -> None:
    """``dvc pull [targets]`` in ``project_dir``: restore the data pinned by DVC from the remote.

    Retried (``retries`` of the task, set from params ``retrain.pull_retries``): a remote that is briefly
    unreachable must not cost a week's retraining.

    Raises:
        CommandFailed: after the last attempt; the message holds DVC's output.
    """
    run_command([*tool("dvc"), "pull", *targets], cwd=project_dir, logger=get_run_logger(), timeout_s=timeout_s)


@task(name="set params")
def set_params(project_dir: str, overrides: Sequence[str]) -> list[str]:
    """Write ``key=value`` overrides (``dvc exp run -S`` syntax) into ``project_dir/params.yaml``.

    Returns:
        the overrides written.
    Raises:
        KeyError: a key path through a missing key; ValueError: a malformed override. The file is left
        unchanged then (it is written atomically after all overrides applied).
    """
    overrides = list(overrides)
    if overrides:
        apply_overrides(Path(project_dir) / "params.yaml", overrides)
        get_run_logger().info("params.yaml overrides: %s", ", ".join(overrides))
    return overrides


@task(name="dvc repro")
def dvc_repro(project_dir: str, parent_run_id: str, targets: Sequence[str] = (), force: bool = False) -> dict:
    """``dvc repro [targets] [--force]`` with every stage's MLflow run nested under ``parent_run_id``.

    Returns:
        :func:`parse_repro_log` of the run (which stages ran, which were up to date).
    Raises:
        StageFailed: a stage failed (DVC stops at the first failure, so later stages never run).
    """
    env = {**os.environ, PARENT_ENV: parent_run_id}
    cmd = [*tool("dvc"), "repro", *targets, *(["--force"] if force else [])]
    try:
        lines = run_command(cmd, cwd=project_dir, env=env, logger=get_run_logger())
    except CommandFailed as e:
        info = parse_repro_log(e.output)
        raise StageFailed(info["failed"], info["ran"], e) from e
    return parse_repro_log(lines)
