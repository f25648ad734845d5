"""The steps of the retraining flow: command lines with streamed output, the DVC steps (`dvc pull`, params
overrides, `dvc repro`) and building the Bento that serves the champion.

Commands (`dvc`, `bentoml`) run with their output streamed to a logger, so the flow's log in the Prefect UI
shows what they printed line by line, and a failure raises with the tail of that output.

Overrides are written into params.yaml before `dvc repro` (the same as `facelandmarks repro -S`), not run
through `dvc exp run -S`: that works without git commits or experiment refs, and the workspace afterwards
holds exactly the params that dvc.lock records. As with `dvc exp run`, overridden values stay in params.yaml.

The Bento is built by `facelandmarks bento` (src/facelandmarks/commands/bento.py): the champion's checkpoint goes
into the BentoML model store first and the Bento packs it, so it serves that registry version without MLflow.
Its labels `champion_version` (the MLflow model version behind the alias `champion` when it was imported),
`registered_model`, `checkpoint_sha256` and `model` (the store tag) are read from the packed model; the flow adds
`mlflow_parent_run`. So the flow can tell whether the current champion already has a Bento: a build that failed
once is made up by the next run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from prefect import get_run_logger, task

from facelandmarks.mlflow_runs import PARENT_ENV
from facelandmarks.params_override import apply_overrides

__all__ = ["CommandFailed", "run_command", "tool", "with_python_on_path", "StageFailed", "dvc_pull", "set_params", "dvc_repro", "parse_repro_log", "bentos_with_labels", "build_bento"]


TAIL_LINES = 40


class CommandFailed(RuntimeError):
    """A command exited non-zero or ran past its timeout.

    Attributes:
        cmd: the argument list.
        returncode: exit status (None after a timeout).
        output: every line of its combined stdout/stderr; ``tail``: the last :data:`TAIL_LINES`.
    """

    def __init__(self, cmd: Sequence[str], returncode: int | None, output: list[str], what: str | None = None):
        self.cmd, self.returncode, self.output = list(cmd), returncode, list(output)
        self.tail = self.output[-TAIL_LINES:]
        status = "timed out" if returncode is None else f"exited with status {returncode}"
        head = what or f"`{' '.join(cmd)}` {status}"
        super().__init__(f"{head}; last output:\n" + "\n".join(self.tail))


def tool(name: str) -> list[str]:
    """Argument list that runs console tool ``name`` of this Python environment.

    ``["python", "-m", "dvc"]`` for ``dvc`` and ``bentoml`` (works without the venv on PATH, as in a
    served flow run), else the executable beside ``sys.executable`` if any, else ``[name]``.
    """
    if name in ("dvc", "bentoml"):
        return [sys.executable, "-m", name]
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [name]


def with_python_on_path(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's folder first on ``PATH``, so that ``python`` in a stage's ``cmd``
    (dvc.yaml) is this environment's Python even when it was started without activating the venv."""
    bindir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        path = os.pathsep.join(p for p in (bindir, path) if p)
    return {**env, "PATH": path}


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGTERM the command and every process it started (DVC and the stage it runs); SIGKILL after 10 s."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.wait()


def run_command(
    cmd: Sequence[str],
    cwd: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
    timeout_s: float | None = None,
) -> list[str]:
    """Run ``cmd`` in ``cwd``; log each output line (stdout and stderr merged) at INFO.

    The environment is ``env`` (default ``os.environ``) with this interpreter's folder first on ``PATH``
    (:func:`with_python_on_path`).

    When it times out, or this process is interrupted (e.g. a cancelled flow run), the command and
    every process it started are stopped, so no stage keeps running orphaned.

    Returns:
        every output line (without newlines).
    Raises:
        CommandFailed: non-zero exit status or timeout; carries the output, its message the last
            :data:`TAIL_LINES` lines.
        FileNotFoundError: the executable does not exist.
    """
    log = logger or logging.getLogger(__name__)
    lines: list[str] = []
    log.info("$ %s  (in %s)", " ".join(cmd), cwd)
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=with_python_on_path(env if env is not None else os.environ), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            if line.strip():
                log.info("%s", line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        reader.join(timeout=5)
        raise CommandFailed(cmd, None, lines, f"`{' '.join(cmd)}` ran past its timeout of {timeout_s:g} s") from None
    except BaseException:
        _kill_tree(proc)
        raise
    reader.join(timeout=30)
    if proc.returncode != 0:
        raise CommandFailed(cmd, proc.returncode, lines)
    return lines


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


_LIST_SCRIPT = (
    "import json, bentoml; "
    "print(json.dumps([[str(b.tag), dict(b.info.labels)] for b in bentoml.bentos.list()]))"
)


def bentos_with_labels(project_dir: str | os.PathLike, labels: Mapping[str, str]) -> list[str]:
    """Tags of Bentos in the BentoML store (``BENTOML_HOME``) whose labels include ``labels``.

    Runs in a subprocess so that the store is the one the environment names now (BentoML fixes its
    home folder when first imported).
    """
    proc = subprocess.run([sys.executable, "-c", _LIST_SCRIPT], cwd=project_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"listing the BentoML store failed:\n{proc.stderr[-3000:]}")
    found = json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("[")))
    want = {k: str(v) for k, v in labels.items()}
    return [tag for tag, have in found if all(have.get(k) == v for k, v in want.items())]


@task(name="bentoml build", retries=1, retry_delay_seconds=30)
def build_bento(project_dir: str, bentofile: str, labels: Mapping[str, str], model_uri: str | None = None) -> str:
    """``facelandmarks bento`` in ``project_dir``: import the champion into the BentoML model store, then
    ``bentoml build -f bentofile`` of a Bento that packs it; returns the new Bento's tag.

    Args:
        project_dir: the project's root (the build context).
        bentofile: relative to ``project_dir``.
        labels: extra Bento labels. ``champion_version``, ``registered_model`` (and the other
            :data:`facelandmarks.serving.bento_model.MODEL_LABELS`) are not passed on: the Bento's are read from
            the imported model; a difference from the ones given (the alias moved meanwhile) is logged.
        model_uri: what to import; default ``models:/<labels["registered_model"]>@champion``, else
            ``serve.model_uri`` of the project's params.
    Raises:
        FileNotFoundError: no bentofile.
        facelandmarks.flows.steps.CommandFailed: the import or the build failed (output in the message).
        RuntimeError: the command printed no result.
    """
    from facelandmarks.serving.bento_model import MODEL_LABELS

    log = get_run_logger()
    path = Path(project_dir) / bentofile
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bentofile not found, cannot build the Bento of the new champion")
    if model_uri is None and labels.get("registered_model"):
        model_uri = f"models:/{labels['registered_model']}@champion"
    cmd = [sys.executable, "-m", "facelandmarks.cli", "bento", "--bentofile", bentofile, "--json"]
    cmd += ["--model", model_uri] if model_uri else []
    for k, v in labels.items():
        if k not in MODEL_LABELS:
            cmd += ["--label", f"{k}={v}"]
    lines = run_command(cmd, cwd=project_dir, logger=log)
    try:
        result = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    except (StopIteration, json.JSONDecodeError) as e:
        raise RuntimeError(f"`{' '.join(cmd)}` printed no JSON result line") from e
    if not result.get("bento"):
        raise RuntimeError(f"`{' '.join(cmd)}` built no Bento: {result}")
    for k in MODEL_LABELS:
        if k in labels and result["labels"].get(k) != str(labels[k]):
            log.warning("Bento label %s is %s (read from the packed model), not %s as asked", k,
                        result["labels"].get(k), labels[k])
    log.info("built Bento %s serving %s", result["bento"], result["model"]["tag"])
    return result["bento"]
