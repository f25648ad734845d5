"""The ``pretrain`` stage: train a landmark model on the large domain (300-W).

Reads ``params.yaml`` (sections ``seed``, ``scheme``, ``crop``, ``model``, ``train``, ``pretrain``, ``tracking``)
from the working directory and writes ``models/pretrain/model.pt`` (best by validation NME),
``models/pretrain/val_predictions.png`` and ``reports/pretrain.json``.
"""

from __future__ import annotations

import logging
from typing import Any

from facelandmarks.fsutil import write_json
from facelandmarks.model.config import ModelConfig, ModelParams
from facelandmarks.model.network import LandmarkModel, build_model
from facelandmarks.params import load_params, section
from facelandmarks.schemes import get_scheme
from facelandmarks.train.distributed import process_group
from facelandmarks.train.params import PretrainParams, TrainParams
from facelandmarks.train.runner import load_stage_data, run_stage, set_threads

# Model selection and early stopping use the validation split of the FIRST data set of ``pretrain.dataset``
# (300-W): extra data sets (YouTube-Faces, caricatures) only add training rows.
from facelandmarks.train.transfer import split_parameters

__all__ = ["REPORT", "model_config", "run_name", "main"]

REPORT = "reports/pretrain.json"


def model_config(params: dict[str, Any]) -> ModelConfig:
    """The network config of a pipeline: ``model`` params + the scheme's K + the crop size and params.

    Raises:
        ValueError: invalid ``model`` section or no ``crop.size``.
    """
    mp = section(params, "model", ModelParams)
    crop = dict(params.get("crop") or {})
    if "size" not in crop:
        raise ValueError("params.yaml: section 'crop' has no 'size' (the model's input size)")
    scheme = get_scheme(str(params.get("scheme", "ibug68")))
    return ModelConfig(**mp.model_dump(), num_points=scheme.num_points, scheme=scheme.name,
                       input_size=int(crop["size"]), crop=crop)


def run_name(stage: str, config: ModelConfig, dataset: str) -> str:
    """MLflow run name, e.g. ``pretrain mobilenetv3_small_100+heatmap 300w``."""
    return f"{stage} {config.backbone}+{config.head} {dataset}"


def main() -> dict[str, Any]:
    """Run the stage (one process, or each process of ``torchrun``); returns the report in ``reports/pretrain.json``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params("params.yaml")
    train = section(params, "train", TrainParams)
    stage = section(params, "pretrain", PretrainParams)
    config = model_config(params)
    scheme = get_scheme(config.scheme)
    set_threads(train.num_threads)
    with process_group(train.distributed.resolved().backend, train.device) as ctx:  # torchrun: DDP
        data = load_stage_data(stage.datasets, config.input_size, train.max_faces,
                               variants_per_dataset=stage.variants_per_dataset)
        import torch

        torch.manual_seed(int(params.get("seed", 0)))
        model: LandmarkModel = build_model(config)
        backbone, head = split_parameters(model)
        groups = [{"params": backbone, "lr": stage.lr}, {"params": head, "lr": stage.lr}]
        report = run_stage(
            "pretrain", params, model, data, scheme, groups, train, stage,
            run_name=run_name("pretrain", config, stage.dataset_name),
            fingerprint_parts=["pretrain", stage.model_dump(), train.model_dump(), params.get("seed")],
        )
        if ctx.is_main:  # the other ranks of a torchrun write nothing
            write_json(REPORT, report)
    return report
