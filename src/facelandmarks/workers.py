"""Process pools of the stages: the one way a stage fans its work out over this machine's cores.

The crop stage (``crop.cluster.backend: processes``) and the evaluate stage (``evaluate.workers``) hand chunks
of photos to a pool of spawned processes, each with one torch thread. The chunks depend on the data alone and
every chunk runs the same code with the same thread count as in one process, so the outputs are identical.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

__all__ = ["process_pool"]


@contextmanager
def process_pool(workers: int, initializer: Callable[..., Any] | None = None,
                 initargs: tuple = ()) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` spawned processes on this machine, shut down on exit.

    Spawned, not forked: the caller has torch and reader threads running, which a fork would copy half-way.
    The workers start in the caller's working directory, so relative paths (the tables' ``image_path``)
    resolve as they do in the caller. Tasks and their results must be picklable; a task's exception is
    raised by its future's ``result()``.

    Args:
        workers: processes (>= 1).
        initializer, initargs: run once in each worker before its first task (e.g. load the models).
    Raises:
        ValueError: ``workers < 1``.
    """
    if workers < 1:
        raise ValueError(f"a process pool needs at least 1 worker, got {workers}")
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=initializer, initargs=initargs) as pool:
        yield pool
