"""Run a command line of the pipeline (``dvc``, ``bentoml``) with its output streamed to a logger.

The flow's log in the Prefect UI then shows what DVC and BentoML printed, line by line, and a failure
raises with the tail of that output, so the reason is in the exception itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["CommandFailed", "run_command", "tool", "with_python_on_path"]

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
