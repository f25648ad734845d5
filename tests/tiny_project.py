"""A TINY, self-contained copy of the project for end-to-end pipeline runs in tests.

:func:`make_tiny_project` copies the working tree of this repository (tracked files and untracked
files that git does not ignore, minus stage outputs) into a folder, makes it a git repository of its
own (one commit), points its DVC remote at the real shared remote (absolute path), restores
``data/raw`` with ``dvc pull``, and rewrites ``params.yaml`` so that every stage runs on a handful of
photos for one short epoch. MLflow, BentoML and Prefect stores all live inside the folder, so the
copy never touches the real project or the user's stores.

``dvc pull`` of the real ``data/raw`` (about 190 MB, 2,600 files) costs about 8 s on 2 cores with an
empty DVC cache and about 2 s with a warm one: pass the same ``data_cache`` folder to every copy of a
test session (the ``tiny_data_cache`` fixture in conftest.py). Only the data objects are shared (hard
links, DVC never writes into a cached object); each copy keeps its own DVC cache and run-cache, so a
stage that ran in one copy is never restored from the run-cache in another: it really runs.

Usage (pytest)::

    def test_pipeline(tiny_project):          # fixture in conftest.py
        tiny_project.run("dvc", "repro")      # env: MLFLOW_TRACKING_URI etc. inside the copy
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facelandmarks.quiet import QUIET_ENV as _QUIET_ENV

ROOT = Path(__file__).resolve().parents[1]

#: Quiet, offline runs (../shared/STACK.md).
QUIET_ENV = {**_QUIET_ENV, "OMP_NUM_THREADS": "2"}

#: Photos kept per data set (``download.datasets[*].max_photos``).
TINY_MAX_PHOTOS = 12

#: ``key=value`` settings (dotted keys, as ``dvc exp run -S``) that make each stage tiny. A key is
#: only set when it already exists in the copied params.yaml (every stage rejects unknown keys), so
#: this list may name knobs of sections that a checkout does not have yet.
TINY_SETTINGS: dict[str, Any] = {
    "download.preview.faces_per_dataset": 2,
    "crop.detector.batch_size": 4,
    "crop.num_threads": 1,
    "crop.read_workers": 1,
    "crop.cluster.backend": "local",  # a pool's start-up would outweigh a dozen photos (pools: tests/test_crop_workers.py)
    "augment.variants": 1,
    "augment.preview.faces": 2,
    "model.backbone": "mobilenetv3_small_050",
    "model.pretrained": False,
    "model.head_channels": 16,
    "train.batch_size": 8,
    "train.num_threads": 1,
    "train.num_workers": 0,
    "train.max_faces": 24,
    "train.patience": 0,
    "train.figure_faces": 2,
    "train.progress": False,
    "train.log_model": False,
    "pretrain.epochs": 1,
    "pretrain.max_minutes": 2,
    "finetune.epochs": 1,
    "finetune.max_minutes": 2,
    "evaluate.max_faces": 8,
    "evaluate.protocols": ["crops"],
    "evaluate.splits": ["test"],
    "evaluate.num_threads": 1,
    "evaluate.workers": 1,
    "evaluate.demo.max_frames": 2,
    "evaluate.batch_photos": 4,
    "register.num_threads": 1,
    "retrain.retry_delay_seconds": 1,
}

#: Paths never copied: raw data (restored by ``dvc pull``), the lock of the source's runs (the copy
#: starts fresh: its params differ anyway) and the local stores.
_NEVER_COPY = ("data/raw", "dvc.lock", "mlflow.db", "mlartifacts", "mlruns", "bentoml_home", ".dvc/tmp", ".dvc/cache")


@dataclass
class TinyProject:
    """A tiny copy of the project.

    Attributes:
        root: the copy's root folder (a git repository with DVC).
        env: environment for commands run in the copy: ``os.environ`` plus the quiet/offline
            variables, ``MLFLOW_TRACKING_URI`` (``sqlite:///<root>/.stores/mlflow.db``), ``BENTOML_HOME``
            and ``PREFECT_HOME`` inside ``root/.stores``, this interpreter's folder first on ``PATH`` and
            the copy's ``src`` on ``PYTHONPATH``.
    """

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI of the copy (a sqlite file inside it)."""
        return self.env["MLFLOW_TRACKING_URI"]

    def params(self) -> dict[str, Any]:
        """The copy's params.yaml as a dict."""
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def set_params(self, overrides: Iterable[str]) -> None:
        """Write ``key=value`` overrides into the copy's params.yaml (same rules as ``dvc exp run -S``).

        Raises:
            KeyError: a path through a missing key; ValueError: a malformed override.
        """
        from facelandmarks.params_override import apply_overrides

        apply_overrides(self.root / "params.yaml", list(overrides))

    def run(self, *cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a command in the copy with :attr:`env`; output is captured (text).

        ``dvc``, ``bentoml``, ``prefect`` and ``facelandmarks`` resolve to this interpreter's
        environment. Raises ``AssertionError`` with the output tail when ``check`` and it fails.
        """
        bindir = Path(sys.executable).parent
        exe = str(bindir / cmd[0]) if (bindir / cmd[0]).exists() else cmd[0]
        proc = subprocess.run([exe, *cmd[1:]], cwd=self.root, env=self.env, text=True,
                              capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed in {self.root} (exit {proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def apply_env(self, monkeypatch) -> None:
        """Set :attr:`env`'s project variables in this process (pytest ``monkeypatch``) and cd into root."""
        for k in ("MLFLOW_TRACKING_URI", "BENTOML_HOME", "PREFECT_HOME", "PYTHONPATH", "PATH", *QUIET_ENV):
            monkeypatch.setenv(k, self.env[k])
        monkeypatch.chdir(self.root)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=facelandmarks tests", "-c", "user.email=tests@localhost",
         "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout


def _stage_outputs(source: Path) -> set[str]:
    """Every ``outs``/``metrics``/``plots`` path of ``dvc.yaml`` (relative, no trailing slash)."""
    dvc_yaml = source / "dvc.yaml"
    if not dvc_yaml.is_file():
        return set()
    outs = set()
    for stage in (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}).values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []) or []:
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                outs.add(str(path).rstrip("/"))
    return outs


def _files_to_copy(source: Path) -> list[str]:
    """Tracked + untracked-not-ignored files of ``source``, minus stage outputs and local stores."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=source,
                            check=True, capture_output=True).stdout.decode().split("\0")
    skip = _stage_outputs(source) | set(_NEVER_COPY)

    def skipped(rel: str) -> bool:
        return any(rel == s or rel.startswith(s + "/") for s in skip)

    return sorted(f for f in listed if f and not skipped(f) and (source / f).is_file())


def _remote(source: Path) -> tuple[str, str]:
    """(name, absolute url) of the default DVC remote of ``source`` (relative urls resolved as DVC does)."""
    cfg = configparser.ConfigParser()
    cfg.read([source / ".dvc" / "config", source / ".dvc" / "config.local"])
    name = cfg.get("core", "remote", fallback="shared")
    url = cfg.get(f"'remote \"{name}\"'", "url", fallback=None)
    if url is None:
        raise RuntimeError(f"{source}/.dvc/config: no url for the default DVC remote {name!r}")
    if "://" not in url and not os.path.isabs(url):
        url = str((source / ".dvc" / url).resolve())  # DVC resolves relative urls against .dvc/
    return name, url


def _tiny_params(params_path: Path, tracking_dir: Path, max_photos: int) -> None:
    """Shrink the copied params.yaml in place: few photos, one short epoch, stores inside the copy."""
    from facelandmarks.params_override import apply_overrides

    params = yaml.safe_load(params_path.read_text())

    def exists(dotted: str) -> bool:
        node: Any = params
        for k in dotted.split("."):
            if isinstance(node, dict) and k in node:
                node = node[k]
            else:
                return False
        return True

    overrides = [f"{k}={json.dumps(v)}" for k, v in TINY_SETTINGS.items() if exists(k)]
    overrides += [f"download.datasets.{i}.max_photos={max_photos}"
                  for i in range(len(params.get("download", {}).get("datasets", [])))]
    if exists("tracking.tracking_uri"):
        overrides.append(f"tracking.tracking_uri=sqlite:///{tracking_dir / 'mlflow.db'}")
    if exists("tracking.artifact_location"):
        overrides.append(f"tracking.artifact_location={tracking_dir / 'mlartifacts'}")
    apply_overrides(params_path, overrides)


def make_tiny_project(
    dest: str | os.PathLike,
    *,
    source: str | os.PathLike = ROOT,
    data_cache: str | os.PathLike | None = None,
    max_photos: int = TINY_MAX_PHOTOS,
    overrides: Sequence[str] = (),
    pull: bool = True,
) -> TinyProject:
    """Make a tiny, self-contained copy of the project in ``dest`` (created; must not exist or be empty).

    Args:
        dest: folder of the copy, e.g. pytest's ``tmp_path / "project"``.
        source: the project to copy (default: this repository).
        data_cache: a folder shared by the copies of a session: DVC data objects are hard-linked from
            it before ``dvc pull`` and into it after, so only the first copy reads the remote.
        max_photos: photos kept per data set.
        overrides: extra ``key=value`` params overrides applied after the tiny settings.
        pull: restore ``data/raw`` with ``dvc pull`` now.
    Returns:
        the :class:`TinyProject`; its git repository has one commit holding the tiny params.
    Raises:
        FileExistsError: ``dest`` exists and is not empty.
        AssertionError: ``dvc pull`` failed (output included).
    """
    source, dest = Path(source).resolve(), Path(dest).resolve()
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: not empty")
    dest.mkdir(parents=True, exist_ok=True)
    for rel in _files_to_copy(source):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target)

    stores = dest / ".stores"
    stores.mkdir()
    with open(dest / ".gitignore", "a") as f:
        f.write("\n/.stores/\n")

    name, url = _remote(source)
    (dest / ".dvc" / "config.local").write_text(
        f"['remote \"{name}\"']\n    url = {url}\n[cache]\n    type = \"reflink,hardlink,copy\"\n"
    )
    _tiny_params(dest / "params.yaml", stores, max_photos)
    if overrides:
        from facelandmarks.params_override import apply_overrides

        apply_overrides(dest / "params.yaml", list(overrides))

    env = {**os.environ, **QUIET_ENV,
           "MLFLOW_TRACKING_URI": f"sqlite:///{stores / 'mlflow.db'}",
           "BENTOML_HOME": str(stores / "bentoml"),
           "PREFECT_HOME": str(stores / "prefect"),
           # `python` in dvc.yaml's cmds is this environment's, even when pytest runs from a non-activated venv
           "PATH": os.pathsep.join(p for p in (str(Path(sys.executable).parent), os.environ.get("PATH")) if p),
           # the copy's own code runs its stages (it precedes the editable install's path entry)
           "PYTHONPATH": os.pathsep.join(p for p in (str(dest / "src"), os.environ.get("PYTHONPATH")) if p)}
    env.pop("FACELANDMARKS_PARENT_RUN_ID", None)
    env.pop("PREFECT_API_URL", None)
    project = TinyProject(root=dest, env=env)

    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "tiny copy of the facelandmarks project")
    if pull:
        objects = dest / ".dvc" / "cache" / "files"
        if data_cache:
            _link_tree(Path(data_cache), objects)
        # only the data pins: a plain `dvc pull` also tries to check out every stage output (none here)
        project.run("dvc", "pull", "-q", *sorted(p.name for p in dest.glob("*.dvc") if p.is_file()))
        if data_cache:
            _link_tree(objects, Path(data_cache))
    return project


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file under ``src`` to the same place under ``dst`` (copy across file systems);
    files already in ``dst`` are kept."""
    for dirpath, _, files in os.walk(src):
        target_dir = dst / Path(dirpath).relative_to(src)
        target_dir.mkdir(parents=True, exist_ok=True)
        for f in files:
            target = target_dir / f
            if target.exists():
                continue
            try:
                os.link(Path(dirpath) / f, target)
            except OSError:
                shutil.copy2(Path(dirpath) / f, target)
