"""The fit loop: AdamW, warm-up + cosine LR, best checkpoint by validation NME, early stopping, resume.

One call of :func:`fit` trains a :class:`~facelandmarks.model.network.LandmarkModel`:

* every epoch: shuffled mini-batches (order fixed by the seed and epoch), online augmentation, the
  coordinate loss masked by visibility (:func:`facelandmarks.model.losses.landmark_loss`, in crop pixels),
  plus, when ``heatmap_loss`` > 0, that weight times the DSNT heatmap regulariser
  (:func:`facelandmarks.model.losses.heatmap_js` against the codec's Gaussian targets),
  one LR-scheduler step per optimiser step; then the mean inter-ocular NME on the validation faces;
* the LR follows a linear warm-up and a cosine over the optimiser steps of ``epochs`` epochs; schedule, early
  stopping and the best epoch depend only on the data, the params and the seed (never on elapsed time);
* the best epoch by validation NME is written to ``best_path`` (``models/<stage>/model.pt``);
* ``max_minutes`` is a safety cap only: when an epoch ends past it, training stops there, keeps the best
  checkpoint so far and says so (``FitResult.stopped_by_time_cap``, a warning); such a run is not the run the
  params describe, and the stages report it;
* after every epoch ``last.pt`` (model, optimiser, early-stopping state, epoch, history, RNG
  states and the best weights so far) is written; a later call with the same fingerprint (params and data)
  continues from it, so an interrupted stage loses at most one epoch;
* on CUDA: mixed precision (bfloat16 autocast where supported, else float16 with a gradient scaler) and
  channels-last memory format; on the CPU plain float32;
* under ``torchrun`` (several processes, :mod:`facelandmarks.train.distributed`): DDP, each rank a share of
  every global batch, losses and validation NME reduced across ranks, only rank 0 writing checkpoints.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from facelandmarks.device import resolve_device
from facelandmarks.metrics.nme import nme, normaliser
from facelandmarks.model.checkpoint import read_checkpoint, save_checkpoint, write_torch
from facelandmarks.model.prediction import predict_crops
from facelandmarks.model.codecs import SoftArgmaxCodec
from facelandmarks.model.losses import LossName, heatmap_js, landmark_loss
from facelandmarks.model.network import LandmarkModel
from facelandmarks.model.preprocess import to_tensor
from facelandmarks.schemes import LandmarkScheme
from facelandmarks.train import distributed as ddp
from facelandmarks.train.dataset import FaceDataset, CropSet
from facelandmarks.train.early_stop import EarlyStopping
from facelandmarks.train.schedule import WarmupCosine

__all__ = ["FitOptions", "EpochLog", "FitResult", "fit", "validation_nme"]

log = logging.getLogger(__name__)


@dataclass
class FitOptions:
    """Knobs of one :func:`fit` call (the stages build it from ``params.yaml``).

    Attributes:
        epochs: maximum number of epochs.
        batch_size: faces per optimiser step.
        weight_decay: AdamW decoupled weight decay.
        warmup_epochs: linear LR warm-up length (fractions allowed).
        min_lr_factor: final LR as a fraction of the peak (cosine end).
        loss: coordinate loss name.
        heatmap_loss: weight of the DSNT heatmap regulariser (Jensen-Shannon divergence to a Gaussian at the
            target, nats) added to the coordinate loss (crop pixels); 0: coordinates only. Heatmap heads only.
        heatmap_sigma: the target Gaussian's standard deviation, heatmap cells.
        patience: early stopping after this many epochs without a better validation NME (0: never).
        min_delta: NME decrease that counts as better.
        max_minutes: safety cap on training time (None: none). It never changes the LR schedule; when the
            training time (epochs including validation) passes it, training stops after that epoch with the
            best checkpoint so far and :attr:`FitResult.stopped_by_time_cap` set. Set it well above the
            expected time so a normal run never hits it.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: mixed precision on CUDA.
        channels_last: channels-last memory format on CUDA.
        num_workers: DataLoader worker processes (0 loads in the training process).
        seed: seeds weights, shuffling and augmentation.
        progress: show tqdm progress bars.
        resume: continue from ``last.pt`` when it matches.
    """

    epochs: int = 60
    batch_size: int = 32
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_factor: float = 0.01
    loss: LossName = "l1"
    heatmap_loss: float = 0.0
    heatmap_sigma: float = 1.0
    patience: int = 15
    min_delta: float = 0.0
    max_minutes: float | None = None
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    num_workers: int = 0
    seed: int = 42
    progress: bool = True
    resume: bool = True


@dataclass
class EpochLog:
    """What one epoch measured (logged to MLflow per epoch)."""

    epoch: int
    train_loss: float
    val_nme: float
    lr: float
    seconds: float
    images_per_second: float


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        best_val_nme: best mean inter-ocular NME on the validation faces (fraction).
        best_epoch: its epoch (0-based).
        epochs_run: epochs trained in total (including those before a resume).
        train_seconds: wall time spent in training epochs (including validation; excluding loading).
        images_per_second: training throughput (augmented faces per second of epoch time).
        stopped_early: early stopping (patience) ended training before ``epochs``.
        stopped_by_time_cap: the ``max_minutes`` safety cap ended training before ``epochs`` (the model is
            then not the one the params describe; the stages report it with a warning).
        resumed_from_epoch: the epoch a resume continued after (-1: fresh start).
        history: one :class:`EpochLog` per epoch.
    """

    best_val_nme: float
    best_epoch: int
    epochs_run: int
    train_seconds: float
    images_per_second: float
    stopped_early: bool
    resumed_from_epoch: int
    stopped_by_time_cap: bool = False
    history: list[EpochLog] = field(default_factory=list)


def validation_nme(model: torch.nn.Module, faces: CropSet, scheme: LandmarkScheme, device: torch.device) -> float:
    """Mean inter-ocular NME (fraction) of ``model`` on ``faces``, visible points only.

    In a distributed run every rank measures faces ``rank, rank + world_size, ...`` and the per-face sums are
    reduced, so all ranks return the same mean over all ``faces``.
    """
    ctx = ddp.context()
    if not ctx.enabled:
        pred = predict_crops(model, faces.images, device=device)
        per_face = nme(pred, faces.landmarks, normaliser(faces.landmarks, scheme), faces.visible)
        return float(np.nanmean(per_face))
    share = faces.subset(slice(ctx.rank, None, ctx.world_size))
    total, count = 0.0, 0
    if len(share):
        pred = predict_crops(model, share.images, device=device)
        per_face = nme(pred, share.landmarks, normaliser(share.landmarks, scheme), share.visible).astype(np.float64)
        total, count = float(np.nansum(per_face)), int(np.isfinite(per_face).sum())
    return ddp.reduce_mean(total, count, ctx)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def fit(
    model: LandmarkModel,
    train_set: FaceDataset,
    val_faces: CropSet,
    param_groups: list[dict[str, Any]],
    opts: FitOptions,
    best_path: str | Path,
    last_path: str | Path,
    fingerprint: str = "",
    meta: dict[str, Any] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    train_mode: Callable[[LandmarkModel], None] | None = None,
) -> FitResult:
    """Train ``model`` in place; on return it holds the best weights (by validation NME), in eval mode.

    Args:
        model: the network (fresh, or initialised from a pretrained checkpoint).
        train_set: training faces with online augmentation.
        val_faces: validation crops (no augmentation).
        param_groups: AdamW parameter groups, each with its peak ``lr`` (e.g. backbone and head apart).
        opts: loop knobs.
        best_path: where the best model is written (``models/<stage>/model.pt``).
        last_path: resumable state (``last.pt``), written every epoch.
        fingerprint: identifies params + data; ``last.pt`` is resumed only when it matches and is unfinished.
        meta: facts stored in the checkpoints (stage, data set, ...).
        on_epoch: called after each epoch (MLflow logging).
        train_mode: sets train/eval mode at each epoch start (default ``model.train()``; finetuning keeps
            frozen stages in eval mode).
    Returns:
        :class:`FitResult`.
    Raises:
        ValueError: no training batch (fewer faces than ``batch_size``) or no validation face; or
            ``heatmap_loss`` > 0 for a head without heatmaps.
    """
    if len(val_faces) == 0:
        raise ValueError("no validation faces")
    codec = None
    if opts.heatmap_loss > 0:
        stride = getattr(model.head, "stride", None)
        if stride is None:
            raise ValueError(f"heatmap_loss {opts.heatmap_loss} needs a heatmap head, got {type(model.head).__name__}")
        codec = SoftArgmaxCodec(int(stride), opts.heatmap_sigma)
    batch_size = min(opts.batch_size, len(train_set))
    if batch_size == 0:
        raise ValueError("no training faces")
    ctx = ddp.context()
    main = ctx.is_main
    device = ddp.rank_device(torch.device(resolve_device(opts.device)), ctx)
    cuda = device.type == "cuda"
    model.to(device)
    if cuda and opts.channels_last:
        model.to(memory_format=torch.channels_last)
    scheme = train_set.scheme
    torch.manual_seed(opts.seed)

    # the permutation of epoch e is randperm(len) drawn from seed * 100_003 + e; rank r of w takes every w-th
    # position of it, batch_size / w faces per step: the w ranks' step k is the single process's batch k
    sampler = ddp.train_sampler(train_set, opts.seed * 100_003, ctx)
    loader = DataLoader(
        train_set,
        batch_size=ddp.rank_batch_size(batch_size, ctx),
        sampler=sampler,
        drop_last=True,
        num_workers=opts.num_workers,
        pin_memory=cuda,
    )
    steps_per_epoch = len(loader)
    optimizer = torch.optim.AdamW(param_groups, weight_decay=opts.weight_decay)
    schedule = WarmupCosine(
        optimizer, opts.epochs * steps_per_epoch, int(round(opts.warmup_epochs * steps_per_epoch)), opts.min_lr_factor,
    )
    cap_seconds = None if opts.max_minutes is None else 60.0 * opts.max_minutes
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    use_amp = cuda and opts.amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    stopper = EarlyStopping(patience=opts.patience, min_delta=opts.min_delta)
    history: list[EpochLog] = []
    start_epoch, train_seconds, images_seen = 0, 0.0, 0
    best_state: dict[str, torch.Tensor] | None = None
    resumed_from = -1
    meta = dict(meta or {})

    last_path, best_path = Path(last_path), Path(best_path)
    if opts.resume and last_path.is_file():
        blob = read_checkpoint(last_path, map_location="cpu")
        if blob.get("fingerprint") == fingerprint and not blob.get("finished", False):
            model.load_state_dict(blob["state_dict"])
            optimizer.load_state_dict(blob["optimizer"])
            scaler.load_state_dict(blob["scaler"])
            stopper.load_state_dict(blob["early_stopping"])
            history = [EpochLog(**h) for h in blob["history"]]
            start_epoch = int(blob["epoch"]) + 1
            train_seconds = float(blob["train_seconds"])
            images_seen = int(blob["images_seen"])
            best_state = blob["best_state"]
            _set_rng_state(blob["rng"])
            resumed_from = start_epoch - 1
            log.info("resuming from %s after epoch %d (best val NME %.4f)", last_path, resumed_from, stopper.best)
            if best_state is not None and not best_path.is_file() and main:
                best_model = copy.deepcopy(model).cpu()
                best_model.load_state_dict(best_state)
                save_checkpoint(best_path, best_model, {**meta, "epoch": stopper.best_epoch, "val_nme": stopper.best})
        else:
            log.info("%s belongs to another run or a finished one: starting afresh", last_path)

    stopped_early = stopper.should_stop
    stopped_by_time_cap = False
    step_module = ddp.wrap_for_training(model, device, ctx)  # forward_train(x), DDP when distributed
    epochs_bar = tqdm(range(start_epoch, opts.epochs), desc="epochs", initial=start_epoch, total=opts.epochs,
                      disable=not (opts.progress and main), dynamic_ncols=True)
    for epoch in epochs_bar:
        if stopped_early or stopped_by_time_cap:
            break
        t0 = time.perf_counter()
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        step = epoch * steps_per_epoch
        (train_mode or (lambda m: m.train()))(model)
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{opts.epochs}", leave=False,
                   disable=not (opts.progress and main), dynamic_ncols=True)
        for images, targets, visible in bar:
            x = to_tensor(images).to(device, non_blocking=True)
            if cuda and opts.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            visible = visible.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                out = step_module(x)
            loss = landmark_loss(out["coords"].float(), targets, visible, opts.loss)
            if codec is not None:
                maps = out["heatmaps"]
                loss = loss + opts.heatmap_loss * heatmap_js(maps, codec.encode(targets, maps.shape[-2:]), visible)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            schedule.set(step)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            total += float(loss.detach()) * len(images)
            count += len(images)
            bar.set_postfix(loss=f"{total / count:.3f}")
        bar.close()
        if ctx.enabled:
            total, count = ddp.reduce_sums([total, count], ctx)  # the loss over all ranks' faces
            count = int(count)
            ddp.broadcast_buffers(model, ctx)  # BatchNorm running statistics: rank 0's, on every rank
        val = validation_nme(model, val_faces, scheme, device)
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        images_seen += count
        entry = EpochLog(epoch, total / max(count, 1), val, optimizer.param_groups[-1]["lr"], seconds,
                         count / seconds)
        history.append(entry)
        if stopper.step(val, epoch):
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if main:
                save_checkpoint(best_path, model, {**meta, "epoch": epoch, "val_nme": val})
        stopped_early = stopper.should_stop and epoch + 1 < opts.epochs
        capped = cap_seconds is not None and train_seconds >= cap_seconds and epoch + 1 < opts.epochs
        if ddp.agree(capped and not stopped_early, ctx):  # rank 0's clock decides for all ranks
            stopped_by_time_cap = True
            (log.warning if main else log.debug)(
                        "max_minutes safety cap (%.1f min) reached after epoch %d of %d: stopping with the best "
                        "checkpoint so far (epoch %d); this is NOT the run the params describe - raise max_minutes",
                        opts.max_minutes, epoch + 1, opts.epochs, stopper.best_epoch + 1)
        msg = (f"epoch {epoch + 1}/{opts.epochs}: train loss {entry.train_loss:.4f}, val NME {100 * val:.2f}% "
               f"(best {100 * stopper.best:.2f}% @ {stopper.best_epoch + 1}), {entry.images_per_second:.0f} img/s")
        epochs_bar.set_postfix(loss=f"{entry.train_loss:.3f}", val_nme=f"{100 * val:.2f}%",
                               best=f"{100 * stopper.best:.2f}%")
        if not main:
            continue
        log.info(msg)
        save_checkpoint(
            last_path, model, {**meta, "epoch": epoch},
            optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
            early_stopping=stopper.state_dict(), history=[vars(h) for h in history], epoch=epoch,
            train_seconds=train_seconds, images_seen=images_seen, best_state=best_state, rng=_rng_state(),
            fingerprint=fingerprint, finished=False,
        )
        if on_epoch is not None:
            on_epoch(entry)

    epochs_bar.close()
    if best_state is None:
        raise RuntimeError("training ran no epoch (epochs <= 0?)")
    model.load_state_dict(best_state)
    model.eval()
    if main:
        blob = read_checkpoint(last_path)
        blob["finished"] = True
        write_torch(last_path, blob)
    ddp.barrier(ctx)  # no rank leaves before rank 0 has written its files
    return FitResult(
        best_val_nme=stopper.best,
        best_epoch=stopper.best_epoch,
        epochs_run=len(history),
        train_seconds=train_seconds,
        images_per_second=images_seen / train_seconds if train_seconds else 0.0,
        stopped_early=stopped_early,
        resumed_from_epoch=resumed_from,
        stopped_by_time_cap=stopped_by_time_cap,
        history=history,
    )
