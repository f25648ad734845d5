"""Building the Bento that serves the champion (``bentoml build``), labelled with what it serves.

Each Bento the flow builds carries the labels ``champion_version`` (the MLflow model version behind the
alias ``champion``) and ``mlflow_parent_run``, so that the flow can tell whether the current champion
already has a Bento: a build that failed once is made up by the next run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from prefect import get_run_logger, task

from facelandmarks.flows.shell import run_command, tool

__all__ = ["bentos_with_labels", "build_bento"]

_TAG = re.compile(r"__tag__:(\S+)")

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
def build_bento(project_dir: str, bentofile: str, labels: Mapping[str, str]) -> str:
    """``bentoml build -f bentofile --label k=v ...`` in ``project_dir``; returns the new Bento's tag.

    Raises:
        FileNotFoundError: no bentofile.
        facelandmarks.flows.shell.CommandFailed: the build failed (output in the message).
        RuntimeError: the build printed no tag.
    """
    path = Path(project_dir) / bentofile
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bentofile not found, cannot build the Bento of the new champion")
    cmd = [*tool("bentoml"), "build", "-f", bentofile, "-o", "tag"]
    for k, v in labels.items():
        cmd += ["--label", f"{k}={v}"]
    lines = run_command(cmd, cwd=project_dir, logger=get_run_logger())
    tags = [m.group(1) for line in lines if (m := _TAG.search(line))]
    if not tags:
        raise RuntimeError(f"`{' '.join(cmd)}` printed no Bento tag (expected a line __tag__:<name>:<version>)")
    get_run_logger().info("built Bento %s", tags[-1])
    return tags[-1]
