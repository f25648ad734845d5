"""The ``pretrain`` stage: train a landmark model on the large domain (300-W).

Reads ``params.yaml`` (sections ``seed``, ``scheme``, ``crop``, ``model``, ``train``, ``pretrain``, ``tracking``)
from the working directory and writes ``models/pretrain/model.pt`` (best by validation NME),
``models/pretrain/val_predictions.png`` and ``reports/pretrain.json``.
"""

from __future__ import annotations

from typing import Any

import torch

from facelandmarks.fsutil import write_json
from facelandmarks.model.network import LandmarkModel, build_model
from facelandmarks.train.distributed import process_group
from facelandmarks.train.params import PretrainParams
from facelandmarks.train.runner import load_stage_data, run_name, run_stage, setup_stage
from facelandmarks.train.transfer import split_parameters

__all__ = ["REPORT", "main"]

REPORT = "reports/pretrain.json"


def main() -> dict[str, Any]:
    """Run the stage (one process, or each process of ``torchrun``); returns the report in ``reports/pretrain.json``."""
    setup = setup_stage("pretrain", PretrainParams)
    params, train, stage, config, scheme = setup.params, setup.train, setup.stage, setup.config, setup.scheme
    # model selection and early stopping on the validation split of the FIRST data set of pretrain.dataset
    # (300-W); extra data sets (YouTube-Faces, caricatures) only add training rows
    with process_group(train.distributed.resolved().backend, train.device) as ctx:  # torchrun: DDP
        data = load_stage_data(stage.datasets, config.input_size, train.max_faces,
                               variants_per_dataset=stage.variants_per_dataset)
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
