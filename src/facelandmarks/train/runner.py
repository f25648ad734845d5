"""What the ``pretrain`` and ``finetune`` stages share: data, threads, the MLflow child run, reports.

A stage (:mod:`facelandmarks.train.pretrain_stage`, :mod:`facelandmarks.train.finetune_stage`) reads
params.yaml, builds its model and parameter groups, and hands them to :func:`run_stage`, which

1. loads the training variants of its data set (``data/processed/augmented.parquet``, split ``train``) and
   the validation crops (``data/interim/crops.parquet``, split ``val``);
2. trains with :func:`facelandmarks.train.loop.fit` (best ``models/<stage>/model.pt``, resumable
   ``<state_dir>/<stage>/last.pt``);
3. logs params, per-epoch ``train_loss`` / ``val_nme`` / ``lr``, the checkpoint, a figure of predictions on
   validation faces and the model (``mlflow.pytorch.log_model`` with an input example of batch 2) in a
   child run of the pipeline's parent run;
4. returns the numbers for ``reports/<stage>.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from facelandmarks.data.table import read_table
from facelandmarks.device import resolve_device, set_threads
from facelandmarks.metrics.nme import nme, normaliser
from facelandmarks.model.config import ModelConfig, ModelParams
from facelandmarks.model.network import LandmarkModel, count_parameters
from facelandmarks.model.prediction import predict_crops
from facelandmarks.params import load_params, section
from facelandmarks.schemes import LandmarkScheme, get_scheme
from facelandmarks.train import distributed as ddp
from facelandmarks.train.dataset import CropSet, FaceDataset, concat_faces, load_faces
from facelandmarks.train.figures import prediction_figure
from facelandmarks.train.loop import EpochLog, FitOptions, FitResult, fit
from facelandmarks.train.params import TrainParams, _StageParams

__all__ = [
    "StageSetup",
    "setup_stage",
    "model_config",
    "run_name",
    "CROPS_TABLE",
    "AUGMENTED_TABLE",
    "load_split",
    "StageData",
    "load_stage_data",
    "fit_options",
    "fingerprint",
    "evaluate_nme",
    "log_model",
    "run_stage",
    "best_checkpoint",
]

log = logging.getLogger(__name__)

CROPS_TABLE = Path("data/interim/crops.parquet")
AUGMENTED_TABLE = Path("data/processed/augmented.parquet")


#: keys of the ``crop`` section that only decide how fast the crop stage runs (torch threads, photo decoding
#: threads, process pool or Dask cluster): not stored in a checkpoint, so changing them retrains nothing
CROP_SPEED_KEYS = ("num_threads", "read_workers", "cluster")


def model_config(params: dict[str, Any]) -> ModelConfig:
    """The network config of a pipeline: ``model`` params + the scheme's K + the crop size and params.

    The checkpoint stores the ``crop`` section without :data:`CROP_SPEED_KEYS` (what inference needs: crop
    geometry, MTCNN settings, match IoU, fallback box).

    Raises:
        ValueError: invalid ``model`` section or no ``crop.size``.
    """
    mp = section(params, "model", ModelParams)
    crop = {k: v for k, v in (params.get("crop") or {}).items() if k not in CROP_SPEED_KEYS}
    if "size" not in crop:
        raise ValueError("params.yaml: section 'crop' has no 'size' (the model's input size)")
    scheme = get_scheme(str(params.get("scheme", "ibug68")))
    return ModelConfig(**mp.model_dump(), num_points=scheme.num_points, scheme=scheme.name,
                       input_size=int(crop["size"]), crop=crop)


def run_name(stage: str, config: ModelConfig, dataset: str) -> str:
    """MLflow run name, e.g. ``pretrain mobilenetv3_small_100+heatmap 300w``."""
    return f"{stage} {config.backbone}+{config.head} {dataset}"


@dataclass
class StageSetup:
    """What a training stage reads before it trains.

    Attributes:
        params: the whole params.yaml.
        train: its ``train`` section; stage: the stage's own section (``pretrain`` / ``finetune``).
        config: the network config (:func:`model_config`); scheme: its point scheme.
        threads: torch CPU threads set for this process.
    """

    params: dict[str, Any]
    train: TrainParams
    stage: Any
    config: ModelConfig
    scheme: LandmarkScheme
    threads: int


def setup_stage(name: str, params_model: type, params_path: str = "params.yaml") -> StageSetup:
    """Logging, params (``train`` + the ``name`` section validated by ``params_model``), model config and CPU
    threads of a training stage, in that order.

    Raises:
        ValueError / pydantic.ValidationError: a missing or invalid section (names it).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(params_path)
    train = section(params, "train", TrainParams)
    stage = section(params, name, params_model)
    config = model_config(params)
    return StageSetup(params, train, stage, config, get_scheme(config.scheme), set_threads(train.num_threads))


def load_split(table: pd.DataFrame, dataset: str, split: str, source: Path, size: int, image_column: str,
               landmark_column: str, max_rows: int = 0, max_variants: int = 0) -> CropSet | None:
    """Crops of one data set and split (None when there is no such row).

    Args:
        max_rows: at most this many rows (0: all).
        max_variants: keep only rows whose ``variant`` is below this (0: all; needs a ``variant`` column).
    """
    rows = table[(table["dataset"] == dataset) & (table["split"] == split)]
    if max_variants:
        if "variant" not in rows.columns:
            raise ValueError(f"{source}: no 'variant' column to cap the variants of {dataset}")
        rows = rows[rows["variant"] < max_variants]
    if max_rows:
        rows = rows.iloc[:max_rows]
    if len(rows) == 0:
        return None
    log.info("%s: %d %s rows of %s", source, len(rows), split, dataset)
    return load_faces(rows, Path.cwd(), image_column, landmark_column, size=size)


@dataclass
class StageData:
    """Faces of one stage.

    Attributes:
        train: training rows (augmented variants) of all the stage's data sets, concatenated.
        val: validation crops of the first data set (model selection, early stopping).
        test: crops of the test split of the first data set, when asked for.
        val_is_train: no validation rows existed; ``val`` holds training rows.
        train_counts: training rows per data set.
        mix: ``(name, pool, ratio)`` faces mixed into every epoch (finetune ``mix``).
        extra_val: validation crops of the mixed data sets, by name (reported, never used to select).
    """

    train: CropSet
    val: CropSet
    test: CropSet | None
    val_is_train: bool = False
    train_counts: dict[str, int] = field(default_factory=dict)
    mix: list[tuple[str, CropSet, float]] = field(default_factory=list)
    extra_val: dict[str, CropSet] = field(default_factory=dict)


def load_stage_data(dataset: str | list[str], size: int, max_faces: int = 0, test_split: str | None = None,
                    variants_per_dataset: dict[str, int] | None = None,
                    mix: dict[str, float] | None = None) -> StageData:
    """Load a stage's faces.

    Args:
        dataset: data set name (``300w``, ``infanface``) or a list of them: training rows of all, validation
            (and test) crops of the first.
        size: crop side the model takes.
        max_faces: at most this many training rows per data set (0: all; tiny test runs).
        test_split: also load this split of the first data set's crops (finetune: ``test``).
        variants_per_dataset: per data set, only augment variants ``0 .. n-1`` (1: the plain crop only).
        mix: ``{name: ratio}`` data sets whose training rows are mixed into every epoch (see
            :class:`~facelandmarks.train.dataset.FaceDataset`); their validation crops are loaded too.
    Raises:
        ValueError: no training row for a data set, or a ratio <= 0 (names the table / data set).
        FileNotFoundError: a table is missing (run the crop and augment stages).
    """
    datasets = [dataset] if isinstance(dataset, str) else list(dataset)
    variants = dict(variants_per_dataset or {})
    augmented = read_table(AUGMENTED_TABLE)
    crops = read_table(CROPS_TABLE)

    def train_rows(name: str) -> CropSet:
        faces = load_split(augmented, name, "train", AUGMENTED_TABLE, size, "image_path", "landmarks", max_faces,
                           variants.get(name, 0))
        if faces is None:
            raise ValueError(f"{AUGMENTED_TABLE}: no training rows of data set {name!r}")
        return faces

    parts = {name: train_rows(name) for name in datasets}
    train = concat_faces(list(parts.values()))
    first = datasets[0]
    val = load_split(crops, first, "val", CROPS_TABLE, size, "crop_path", "crop_landmarks")
    val_is_train = val is None
    if val is None:
        log.warning("%s: no validation rows of %s: validating on (augmented) training rows", CROPS_TABLE, first)
        val = train.subset(slice(0, min(len(train), 64)))
    test = None
    if test_split:
        test = load_split(crops, first, test_split, CROPS_TABLE, size, "crop_path", "crop_landmarks")
    pools, extra_val = [], {}
    for name, ratio in (mix or {}).items():
        if ratio <= 0:
            raise ValueError(f"mix ratio of {name!r} must be > 0, got {ratio}")
        pools.append((name, train_rows(name), float(ratio)))
        v = load_split(crops, name, "val", CROPS_TABLE, size, "crop_path", "crop_landmarks")
        if v is not None:
            extra_val[name] = v
    return StageData(train, val, test, val_is_train, {k: len(v) for k, v in parts.items()}, pools, extra_val)


def best_checkpoint(stage: str) -> Path:
    """``models/<stage>/model.pt``: the checkpoint a training stage keeps (its DVC output)."""
    return Path("models") / stage / "model.pt"


def fit_options(train: TrainParams, stage: _StageParams, seed: int) -> FitOptions:
    """Loop options from the ``train`` section and a stage section."""
    return FitOptions(
        epochs=stage.epochs,
        batch_size=stage.batch_size or train.batch_size,
        weight_decay=train.weight_decay,
        warmup_epochs=train.warmup_epochs,
        min_lr_factor=train.min_lr_factor,
        loss=train.loss,
        heatmap_loss=train.heatmap_loss,
        heatmap_sigma=train.heatmap_sigma,
        patience=train.patience,
        max_minutes=stage.max_minutes,
        device=train.device,
        amp=train.amp,
        channels_last=train.channels_last,
        num_workers=train.num_workers,
        seed=seed,
        progress=train.progress,
        resume=train.resume,
    )


def fingerprint(*parts: Any, faces: CropSet | None = None, files: list[Path] = ()) -> str:
    """sha256 of JSON-able parts, a face set (ids and landmarks) and files: what a resumable run depends on."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    if faces is not None:
        h.update("\n".join(map(str, faces.face_ids)).encode())
        h.update(np.ascontiguousarray(faces.landmarks).tobytes())
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def evaluate_nme(model: torch.nn.Module, faces: CropSet, scheme: LandmarkScheme, device: torch.device) -> np.ndarray:
    """Per-face inter-ocular NME ``(N,)`` (fraction) of ``model`` on ``faces``."""
    pred = predict_crops(model, faces.images, device=device)
    return nme(pred, faces.landmarks, normaliser(faces.landmarks, scheme), faces.visible)


def log_model(model: LandmarkModel, name: str = "model") -> str | None:
    """Log the model with ``mlflow.pytorch.log_model`` (torch.export format, input example of batch 2).

    Returns:
        The logged model's URI (``models:/m-...``), or None when logging failed (a warning says why; the
        stage still succeeds, its checkpoint is logged as an artifact).
    """
    import mlflow
    import timm

    s = model.config.input_size
    example = np.zeros((2, 3, s, s), dtype=np.float32)
    try:
        info = mlflow.pytorch.log_model(
            model.cpu().eval(),
            name=name,
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"timm=={timm.__version__}",
                              f"mlflow=={mlflow.__version__}", "numpy"],
        )
    except Exception as e:  # torch.export or MLflow can fail on exotic backbones: keep the stage alive
        log.warning("mlflow.pytorch.log_model failed (%s: %s); the checkpoint artifact is still logged",
                    type(e).__name__, e)
        return None
    return info.model_uri


def run_stage(
    stage: str,
    params: dict[str, Any],
    model: LandmarkModel,
    data: StageData,
    scheme: LandmarkScheme,
    param_groups: list[dict[str, Any]],
    train_params: TrainParams,
    stage_params: _StageParams,
    run_name: str,
    fingerprint_parts: list[Any],
    fingerprint_files: list[Path] = (),
    train_mode: Callable[[LandmarkModel], None] | None = None,
    before_fit: Callable[[torch.device], dict[str, float]] | None = None,
    after_fit: Callable[[LandmarkModel, torch.device], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Train one stage inside its MLflow child run and return its report.

    Args:
        stage: ``pretrain`` or ``finetune`` (output folder ``models/<stage>``).
        params: the whole params.yaml (logged).
        model: network to train.
        data: its faces.
        param_groups: AdamW groups with peak learning rates.
        run_name: MLflow run name (what was trained on what).
        fingerprint_parts / fingerprint_files: what a resumable ``last.pt`` must match.
        train_mode: per-epoch train/eval mode setter (finetune: frozen batch norms stay in eval).
        before_fit: measures something before training (finetune: the pretrained model on the test split);
            its metrics are logged and reported.
        after_fit: measures the trained model (finetune: the test split); logged and reported.
    Returns:
        The report (also what ``reports/<stage>.json`` holds). In a distributed run (torchrun) only rank 0
        opens the MLflow run, measures, logs and reports; the other ranks train their share and return ``{}``.
    """
    import mlflow

    from facelandmarks.mlflow_runs import stage_run

    best_path = best_checkpoint(stage)
    out_dir = best_path.parent
    last_path = Path(train_params.state_dir) / stage / "last.pt"
    opts = fit_options(train_params, stage_params, int(params.get("seed", 0)))
    ctx = ddp.context()
    device = ddp.rank_device(torch.device(resolve_device(opts.device)), ctx)
    meta = {"stage": stage, "dataset": stage_params.dataset_name, "run_name": run_name}
    mix_ids = [(name, ratio, fingerprint(faces=pool)) for name, pool, ratio in data.mix]
    fp = fingerprint(fingerprint_parts, opts.__dict__, model.config.model_dump(), mix_ids, faces=data.train,
                     files=list(fingerprint_files))
    augment = stage_params.online_augment or train_params.online_augment
    train_set = FaceDataset(data.train, scheme, augment, seed=opts.seed,
                            mix=[(pool, ratio) for _, pool, ratio in data.mix])
    if not ctx.is_main:  # rank 0 owns the checkpoint, the report and the MLflow run
        fit(model, train_set, data.val, param_groups, opts, best_path, last_path, fp, meta, train_mode=train_mode)
        return {}

    with stage_run(stage, params, run_name=run_name,
                   tags={"facelandmarks.dataset": stage_params.dataset_name,
                         "facelandmarks.backbone": model.config.backbone,
                         "facelandmarks.head": model.config.head}) as run:
        extra: dict[str, float] = {}
        if before_fit is not None:
            extra.update(before_fit(device))
        mlflow.log_params({"n_params": count_parameters(model), "n_train_rows": len(data.train),
                           "n_val_faces": len(data.val), "device": str(device), "threads": torch.get_num_threads(),
                           "distributed_processes": ctx.world_size,
                           "pretrained_source": model.config.pretrained_source,
                           "input_normalisation": f"mean={model.config.input_mean} std={model.config.input_std}",
                           "train_datasets": stage_params.dataset_name,
                           "selection": f"val NME (inter-ocular) of {stage_params.datasets[0]}",
                           "rows_per_epoch": len(train_set),
                           **{f"train_rows_{k}": v for k, v in data.train_counts.items()},
                           **{f"mix_rows_per_epoch_{name}": n
                              for (name, _, _), (_, n) in zip(data.mix, train_set.mix)}})

        def on_epoch(e: EpochLog) -> None:
            mlflow.log_metrics({"train_loss": e.train_loss, "val_nme": e.val_nme, "lr": e.lr,
                                "images_per_second": e.images_per_second}, step=e.epoch)

        result: FitResult = fit(model, train_set, data.val, param_groups, opts, best_path, last_path, fp, meta,
                                on_epoch=on_epoch, train_mode=train_mode)
        if after_fit is not None:
            extra.update(after_fit(model, device))

        figure = out_dir / "val_predictions.png"
        k = min(train_params.figure_faces, len(data.val))
        if k:
            faces = data.val.subset(slice(0, k))
            pred = predict_crops(model, faces.images, device=device)
            per = nme(pred, faces.landmarks, normaliser(faces.landmarks, scheme), faces.visible)
            prediction_figure(figure, faces.images, pred, faces.landmarks, scheme, per,
                              title=f"{run_name}: validation faces")
            mlflow.log_artifact(str(figure), "figures")
        summary = {
            "best_val_nme": result.best_val_nme,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "train_seconds": result.train_seconds,
            "train_images_per_second": result.images_per_second,
            **extra,
        }
        mlflow.log_metrics(summary)
        warnings: list[str] = []
        if result.stopped_by_time_cap:
            warnings.append(
                f"stopped by the max_minutes safety cap ({stage_params.max_minutes} min) after {result.epochs_run} of "
                f"{opts.epochs} epochs: the model is the best of the epochs run, not the run the params describe; "
                f"raise {stage}.max_minutes")
            log.warning("%s: %s", stage, warnings[-1])
        mlflow.set_tags({"facelandmarks.stopped_by_time_cap": str(result.stopped_by_time_cap).lower(),
                         **({"facelandmarks.warning": " | ".join(warnings)} if warnings else {})})
        mlflow.log_metric("stopped_by_time_cap", float(result.stopped_by_time_cap))
        mlflow.log_artifact(str(best_path), "checkpoint")
        model_uri = log_model(model) if train_params.log_model else None
        report = {
            "stage": stage,
            "dataset": stage_params.dataset_name,
            "train_datasets": stage_params.datasets,
            "selected_on": f"{stage_params.datasets[0]} val",
            "run_name": run_name,
            "backbone": model.config.backbone,
            "pretrained_source": model.config.pretrained_source,
            "head": model.config.head,
            "input_size": model.config.input_size,
            "n_params": count_parameters(model),
            "n_train_rows": len(data.train),
            "train_rows_per_dataset": data.train_counts,
            "rows_per_epoch": len(train_set),
            "mix": {name: {"ratio": ratio, "pool_rows": len(pool), "rows_per_epoch": n}
                    for (name, pool, ratio), (_, n) in zip(data.mix, train_set.mix)},
            "n_val_faces": len(data.val),
            "validated_on_train_rows": data.val_is_train,
            "nme_normaliser": "inter_ocular",
            **summary,
            "stopped_early": result.stopped_early,
            "stopped_by_time_cap": result.stopped_by_time_cap,
            "max_minutes": stage_params.max_minutes,
            "warnings": warnings,
            "resumed_from_epoch": result.resumed_from_epoch,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "distributed_processes": ctx.world_size,
            "mlflow_run_id": run.info.run_id,
            "mlflow_parent_run_id": run.data.tags.get("mlflow.parentRunId"),
            "model_uri": model_uri,
            "checkpoint": str(best_path),
        }
    return report
