"""Atomic file and folder writes: a crash mid-stage leaves no half-written output, and no litter.

A write goes to a temporary beside its output, renamed onto it when complete:

* a file ``dir/name.ext`` is written as ``dir/.name.<random>.tmp.ext`` (:func:`atomic_path`);
* a folder ``dir/name`` is built as ``dir/.name.<random>.tmp`` and swapped in through ``dir/.name.old``
  (:func:`atomic_dir`).

A process killed with SIGKILL cannot clean up, so its temporary stays behind (e.g.
``data/processed/.augmented.k3j2_x.tmp``, a full copy of the augmented crops). Every writer holds an
exclusive ``flock`` on its temporary while it works; the kernel drops that lock when the process dies.
The next write of the same output (the next run of the stage) removes the temporaries of that output
whose lock it can take, i.e. those of dead writers (:func:`remove_stale_temporaries`); a live writer's
temporary is left alone. Nothing depends on file ages or the clock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "remove_stale_temporaries", "stale_temporaries", "write_json", "sha256_file"]

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _hold(fd: int) -> None:
    """Lock a writer's own fresh temporary; a file system without locks only loses the stale-temporary cleanup."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        log.debug("no flock on this file system (%s): stale temporaries cannot be told from live ones", e)


def _temporaries(path: Path) -> list[Path]:
    """Temporaries :func:`atomic_path` / :func:`atomic_dir` may have left for the output ``path``."""
    d = path.parent
    if not d.is_dir():
        return []
    rand = r"[a-z0-9_]+"  # tempfile's random part: no dots, so another output's name never matches
    names = re.compile(rf"\.{re.escape(path.name)}\.{rand}\.tmp"  # atomic_dir
                       rf"|\.{re.escape(path.stem)}\.{rand}\.tmp{re.escape(path.suffix)}"  # atomic_path
                       rf"|\.{re.escape(path.name)}\.old")  # atomic_dir's swap
    return sorted(p for p in d.iterdir() if names.fullmatch(p.name))


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries of the output ``path`` left by writers that died (SIGKILL, power loss).

    A temporary is stale when no live process holds its lock (see the module docstring). Temporaries of
    other outputs are never listed, even in the same folder.

    Args:
        path: the output (``data/processed/augmented``, ``reports/metrics.json``).
    Returns:
        their paths, sorted.
    """
    out = []
    for p in _temporaries(Path(path)):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            out.append(p)  # unopenable (e.g. a dangling link): nobody can be writing it
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer holds it (or the file system has no locks: then it is left alone)
        finally:
            os.close(fd)
        out.append(p)
    return out


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete :func:`stale_temporaries` of the output ``path`` (called by every atomic write).

    Returns:
        what was removed (each one logged).
    """
    removed = []
    for p in stale_temporaries(path):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        if not (p.exists() or p.is_symlink()):
            log.warning("removed a stale temporary of %s left by a killed run: %s", path, p)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` atomically.

    On an exception the temporary file is removed and ``path`` keeps its old content (or stays
    absent). The parent folder is created. The temporary name (``.<stem>.<random>.tmp<suffix>``) keeps
    the suffix so that libraries that infer a format from it (parquet, png) still work. Stale
    temporaries of ``path`` from killed runs are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    _hold(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; on success it replaces ``path`` whole.

    On an exception the temporary folder is deleted and ``path`` is left as it was. Stale temporaries
    of ``path`` from killed runs (``.<name>.<random>.tmp``, ``.<name>.old``) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    fd = os.open(tmp, os.O_RDONLY)
    _hold(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as indented JSON atomically (NaN is written as null)."""
    import json
    import math

    def _clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): _clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [_clean(v) for v in o]
        if hasattr(o, "item") and callable(o.item) and getattr(o, "ndim", 1) == 0:
            return _clean(o.item())
        if hasattr(o, "tolist"):
            return _clean(o.tolist())
        return o

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints, downloads, weight files).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
