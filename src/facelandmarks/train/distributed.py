"""Data-parallel training with PyTorch DistributedDataParallel (DDP), launched by ``torchrun``.

The ``pretrain`` and ``finetune`` stages run unchanged as one process or as N processes started by
``torchrun`` (one node or several; ``torch.distributed`` reads ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` / ``MASTER_PORT`` from the environment torchrun sets). Under torchrun:

* the process group uses NCCL when training on CUDA (each process on GPU ``LOCAL_RANK``) and gloo on the CPU;
* every global batch of ``batch_size`` faces is the one the single process would draw (the same permutation
  of the epoch, :func:`train_sampler`), split across the ranks (``batch_size / world_size`` faces each), and
  DDP averages the gradients, so the optimiser steps follow the single-process run; the difference is that
  BatchNorm normalises with the statistics of each rank's share of the batch (SyncBatchNorm needs a GPU);
* the validation faces are split across the ranks and the per-face NME sums are reduced
  (:func:`reduce_mean`), as is the training loss; every rank then takes the same early-stopping and
  time-cap decisions (:func:`agree`), so no rank waits for a collective the others skipped;
* only rank 0 writes checkpoints, figures, reports and the MLflow run (:attr:`DistContext.is_main`).

How a stage gets there: ``torchrun --nproc_per_node N pipelines/pretrain.py`` directly, or the stage's
entry point re-executing itself under torchrun (:func:`relaunch_under_torchrun`) when
``train.distributed.nproc_per_node`` (params.yaml) or ``FACELANDMARKS_NPROC_PER_NODE`` is above 1, so
``dvc repro`` runs a stage on N processes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from facelandmarks.params import StrictModel

__all__ = [
    "BACKEND_ENV",
    "NPROC_ENV",
    "DistContext",
    "DistributedParams",
    "TrainForward",
    "agree",
    "barrier",
    "broadcast_buffers",
    "context",
    "process_group",
    "rank_batch_size",
    "rank_device",
    "reduce_mean",
    "reduce_sums",
    "relaunch_under_torchrun",
    "stage_entry",
    "torchrun_command",
    "train_sampler",
    "under_torchrun",
    "wrap_for_training",
]

log = logging.getLogger(__name__)

#: Environment variables that win over ``train.distributed`` in params.yaml.
NPROC_ENV = "FACELANDMARKS_NPROC_PER_NODE"
BACKEND_ENV = "FACELANDMARKS_DIST_BACKEND"


class DistributedParams(StrictModel):
    """``train.distributed`` in params.yaml: how many processes a training stage runs on.

    Attributes:
        nproc_per_node: processes on this machine (``torchrun --nproc_per_node``); 1 = a plain process.
            On GPUs: one per GPU. ``FACELANDMARKS_NPROC_PER_NODE`` wins.
        backend: ``auto`` (NCCL when training on CUDA, else gloo), ``gloo`` or ``nccl``.
            ``FACELANDMARKS_DIST_BACKEND`` wins.
    """

    nproc_per_node: int = Field(1, ge=1)
    backend: Literal["auto", "gloo", "nccl"] = "auto"

    def resolved(self) -> DistributedParams:
        """These params with the environment variables applied.

        Raises:
            ValueError: an environment variable holds an invalid value (names it).
        """
        data = self.model_dump()
        if os.environ.get(NPROC_ENV):
            try:
                data["nproc_per_node"] = int(os.environ[NPROC_ENV])
            except ValueError:
                raise ValueError(f"{NPROC_ENV}={os.environ[NPROC_ENV]!r} is not an integer") from None
        if os.environ.get(BACKEND_ENV):
            data["backend"] = os.environ[BACKEND_ENV]
        try:
            return DistributedParams(**data)
        except ValueError as e:
            raise ValueError(f"{NPROC_ENV} / {BACKEND_ENV}: {e}") from None


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a distributed run (``rank 0 of 1`` outside one).

    Attributes:
        rank: global rank, 0-based.
        local_rank: rank on this machine (the GPU index under NCCL).
        world_size: processes in the run.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, reports and MLflow runs."""
        return self.rank == 0


def context() -> DistContext:
    """The current :class:`DistContext` (from the initialised process group, else a single process)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())
    return DistContext()


def under_torchrun() -> bool:
    """True in a process started by torchrun (``TORCHELASTIC_RUN_ID`` / ``LOCAL_RANK`` set)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def _backend(name: str, device: str) -> str:
    if name != "auto":
        return name
    cuda = torch.cuda.is_available() and device != "cpu"
    return "nccl" if cuda else "gloo"


@contextmanager
def process_group(backend: str = "auto", device: str = "auto") -> Iterator[DistContext]:
    """Join the process group torchrun set up (``WORLD_SIZE > 1``) for the ``with`` block; leave it after.

    Outside torchrun (or with one process) nothing is initialised and the context is ``rank 0 of 1``.

    Args:
        backend: ``auto`` (NCCL when ``device`` may be CUDA and a GPU is there, else gloo), ``gloo``, ``nccl``.
        device: the training device setting (``auto``, ``cpu``, ``cuda``).
    Yields:
        the :class:`DistContext`.
    Raises:
        ValueError: ``nccl`` without CUDA.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        yield context()
        return
    name = _backend(backend, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("train.distributed.backend is 'nccl' but CUDA is not available; use 'gloo' or 'auto'")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(name)
    ctx = context()
    log.info("distributed training: rank %d of %d (local rank %d), backend %s", ctx.rank, ctx.world_size,
             ctx.local_rank, name)
    try:
        yield ctx
    finally:
        dist.destroy_process_group()


def rank_device(device: torch.device, ctx: DistContext | None = None) -> torch.device:
    """``cuda`` -> ``cuda:LOCAL_RANK`` in a distributed run (one GPU per process); else ``device``."""
    ctx = ctx or context()
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def rank_batch_size(batch_size: int, ctx: DistContext | None = None) -> int:
    """Faces per rank and step: ``batch_size / world_size`` (the global batch stays ``batch_size``).

    Raises:
        ValueError: ``batch_size`` is not a multiple of the number of processes.
    """
    ctx = ctx or context()
    if batch_size % ctx.world_size:
        raise ValueError(f"train.batch_size {batch_size} is not a multiple of the {ctx.world_size} training processes")
    return batch_size // ctx.world_size


def train_sampler(dataset: Dataset, seed: int, ctx: DistContext | None = None) -> DistributedSampler:
    """Sampler of the training rows: rank ``r`` of ``w`` gets positions ``r, r + w, ...`` of the epoch's permutation.

    The permutation is ``torch.randperm(len(dataset))`` drawn from ``seed + epoch`` (call ``set_epoch``), the
    same as ``RandomSampler`` with a generator seeded so; with ``w`` ranks and ``batch_size / w`` faces per
    rank, step ``k`` of all ranks together covers positions ``k * batch_size .. (k + 1) * batch_size - 1``:
    the single-process batch. The ``len(dataset) % w`` rows left over are dropped, like the incomplete
    last batch of a single process.
    """
    ctx = ctx or context()
    return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed,
                              drop_last=True)


class TrainForward(nn.Module):
    """``model.forward_train(x)`` as ``forward``: what DDP wraps (DDP syncs gradients of ``forward`` only).

    Input ``(B, 3, S, S)`` float; output the head's dict: ``coords`` ``(B, K, 2)`` crop pixels, and for a heatmap
    head ``heatmaps`` ``(B, K, H, W)`` softmax maps.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``model.forward_train(x)``: ``x`` ``(B, 3, S, S)`` float32 -> ``{"coords": (B, K, 2) float32 crop
        pixels, "heatmaps": (B, K, H, W) softmax heatmaps (heatmap head only)}``."""
        return self.model.forward_train(x)


def wrap_for_training(model: nn.Module, device: torch.device, ctx: DistContext | None = None) -> nn.Module:
    """The module the training step calls (``forward_train``'s dict): :class:`TrainForward`, wrapped in DDP in a distributed run.

    DDP broadcasts rank 0's parameters and buffers when it is built, so all ranks start alike.
    """
    ctx = ctx or context()
    step = TrainForward(model)
    if not ctx.enabled:
        return step
    ids = [device.index] if device.type == "cuda" else None
    # depthwise-conv weights (C, 1, k, k) have ambiguous strides; their gradients are copied into the buckets
    # correctly, but torch warns on every rank once per run: harmless, silenced
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return nn.parallel.DistributedDataParallel(step, device_ids=ids)


def broadcast_buffers(model: nn.Module, ctx: DistContext | None = None) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank: after the last step of an
    epoch each rank's running statistics saw only its own faces; validation and checkpoints use rank 0's."""
    ctx = ctx or context()
    if not ctx.enabled:
        return
    with torch.no_grad():
        for b in model.buffers():
            dist.broadcast(b, 0)


def _reduce_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def reduce_sums(values: Sequence[float], ctx: DistContext | None = None) -> list[float]:
    """Sum each value over all ranks (float64); the values unchanged in a single process."""
    ctx = ctx or context()
    if not ctx.enabled:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu()]


def reduce_mean(total: float, count: float, ctx: DistContext | None = None) -> float:
    """``sum(total) / sum(count)`` over all ranks (NaN when no rank counted anything)."""
    t, n = reduce_sums([total, count], ctx)
    return t / n if n else float("nan")


def agree(flag: bool, ctx: DistContext | None = None) -> bool:
    """Rank 0's ``flag`` on every rank (decisions that depend on wall time, e.g. the time cap)."""
    ctx = ctx or context()
    if not ctx.enabled:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64, device=_reduce_device())
    dist.broadcast(t, 0)
    return bool(t.item())


def barrier(ctx: DistContext | None = None) -> None:
    """Wait for every rank (no-op in a single process)."""
    ctx = ctx or context()
    if ctx.enabled:
        dist.barrier()


def torchrun_command(script: str | os.PathLike, nproc_per_node: int, args: Sequence[str] = ()) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N script args...`` (one node).

    Several nodes: run ``torchrun --nnodes M --node_rank I --rdzv_endpoint HOST:PORT --nproc_per_node N
    pipelines/<stage>.py`` on each node yourself (the stage works unchanged under any torchrun).
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            os.fspath(script), *args]


def relaunch_under_torchrun(script: str | os.PathLike, params: DistributedParams,
                            args: Sequence[str] = ()) -> int | None:
    """Run ``script`` under torchrun when asked for more than one process and not under torchrun already.

    Args:
        script: the stage's entry point (``pipelines/pretrain.py``).
        params: ``train.distributed`` (environment variables applied here).
        args: its command-line arguments.
    Returns:
        torchrun's exit status when it ran (the caller exits with it), None when the caller should just
        run the stage in this process (one process asked for, or already a torchrun worker).
    """
    p = params.resolved()
    if p.nproc_per_node <= 1 or under_torchrun():
        return None
    env = {**os.environ, BACKEND_ENV: p.backend}
    cmd = torchrun_command(Path(script), p.nproc_per_node, args)
    log.info("running under torchrun: %s", " ".join(cmd))
    return subprocess.run(cmd, env=env, check=False).returncode


def stage_entry(main: Callable[[], Any], script: str | os.PathLike,
                params_path: str | os.PathLike = "params.yaml") -> None:
    """What ``pipelines/pretrain.py`` and ``pipelines/finetune.py`` run: the stage in this process, or the
    same script under torchrun when ``train.distributed`` (or ``FACELANDMARKS_NPROC_PER_NODE``) asks for
    more than one process.

    Raises:
        SystemExit: torchrun failed (its exit status).
        ValueError: invalid ``train`` params (names the file).
    """
    from facelandmarks.params import load_params, section
    from facelandmarks.train.params import TrainParams

    train = section(load_params(params_path), "train", TrainParams, str(params_path))
    status = relaunch_under_torchrun(script, train.distributed)
    if status is None:
        main()
    elif status != 0:
        raise SystemExit(status)
