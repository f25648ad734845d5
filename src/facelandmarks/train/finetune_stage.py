"""The ``finetune`` stage: adapt the pretrained model to the second domain (InfAnFace).

Starts from ``finetune.init`` (``models/pretrain/model.pt``): the backbone always, the head too unless the
point scheme differs (or ``finetune.reinit_head: always``). Optionally freezes the first backbone stages and
gives backbone and head their own learning rates. Measures both the pretrained model (no finetuning) and the
finetuned one on the ``finetune.test_split`` crops of the data set, and writes ``models/finetune/model.pt`` and
``reports/finetune.json``.

Against forgetting, ``finetune.mix`` (e.g. ``{300w: 1.0}``) mixes adult training rows into every epoch; model
selection stays on the finetuning data set's validation split (InfAnFace val), and each mixed data set's
validation NME is reported for the pretrained and the chosen model (``val_nme_300w_pretrained`` /
``val_nme_300w_finetuned``). The finetuned model keeps the pretrained model's input normalisation and records its
initialisation source (``pretrained_source``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelandmarks.fsutil import write_json
from facelandmarks.model.checkpoint import load_checkpoint, read_checkpoint
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.network import LandmarkModel, build_model
from facelandmarks.train.distributed import process_group
from facelandmarks.train.params import FinetuneParams
from facelandmarks.train.runner import (
    evaluate_nme,
    load_stage_data,
    run_name,
    run_stage,
    setup_stage,
)
from facelandmarks.train.transfer import (
    freeze_backbone_stages,
    frozen_modules_eval,
    load_pretrained,
    split_parameters,
)

__all__ = ["REPORT", "main"]

REPORT = "reports/finetune.json"
log = logging.getLogger(__name__)


def main() -> dict[str, Any]:
    """Run the stage (one process, or each process of ``torchrun``); returns the report in ``reports/finetune.json``."""
    setup = setup_stage("finetune", FinetuneParams)
    params, train, stage, config, scheme = setup.params, setup.train, setup.stage, setup.config, setup.scheme
    with process_group(train.distributed.resolved().backend, train.device) as ctx:  # torchrun: DDP
        data = load_stage_data(stage.dataset, config.input_size, train.max_faces, test_split=stage.test_split,
                               variants_per_dataset=stage.variants_per_dataset, mix=stage.mix)
        init = Path(stage.init)
        source = ModelConfig.model_validate(read_checkpoint(init)["config"])
        inherited = {"pretrained_source": f"{stage.init} ({source.pretrained_source})",
                     "input_mean": source.input_mean, "input_std": source.input_std}

        torch.manual_seed(int(params.get("seed", 0)))
        model: LandmarkModel = build_model(config.model_copy(update={"pretrained": False, **inherited}))
        model.config = config.model_copy(update=inherited)
        head_reinit = load_pretrained(model, init, stage.reinit_head)
        frozen = freeze_backbone_stages(model, stage.freeze_stages)
        backbone, head = split_parameters(model)
        groups = [{"params": head, "lr": stage.lr}]
        if backbone:
            groups.insert(0, {"params": backbone, "lr": stage.backbone_lr or stage.lr})

        def nme_on_test(m: torch.nn.Module, device: torch.device) -> float:
            if data.test is None:
                log.warning("no %s rows of %s: test NME not measured", stage.test_split, stage.dataset)
                return math.nan
            return float(np.nanmean(evaluate_nme(m, data.test, scheme, device)))

        def before_fit(device: torch.device) -> dict[str, float]:
            pretrained, _ = load_checkpoint(init, map_location=device)
            pre = nme_on_test(pretrained, device)
            pre_val = float(np.nanmean(evaluate_nme(pretrained, data.val, scheme, device)))
            return {f"{stage.test_split}_nme_pretrained": pre, "val_nme_pretrained": pre_val,
                    **{f"val_nme_{name}_pretrained": float(np.nanmean(evaluate_nme(pretrained, faces, scheme, device)))
                       for name, faces in data.extra_val.items()}}

        def after_fit(m: LandmarkModel, device: torch.device) -> dict[str, float]:
            # m holds the chosen (best on the finetuning data set's val) weights
            return {f"{stage.test_split}_nme_finetuned": nme_on_test(m, device),
                    **{f"val_nme_{name}_finetuned": float(np.nanmean(evaluate_nme(m, faces, scheme, device)))
                       for name, faces in data.extra_val.items()}}

        report = run_stage(
            "finetune", params, model, data, scheme, groups, train, stage,
            run_name=run_name("finetune", config, stage.dataset),
            fingerprint_parts=["finetune", stage.model_dump(), train.model_dump(), params.get("seed")],
            fingerprint_files=[init],
            train_mode=(lambda m: frozen_modules_eval(m, stage.freeze_bn)) if (frozen or stage.freeze_bn) else None,
            before_fit=before_fit,
            after_fit=after_fit,
        )
        report.update({
            "init": str(init),
            "head_reinitialised": head_reinit,
            "frozen_parameters": len(frozen),
            "frozen_batchnorm_statistics": stage.freeze_bn,
            "n_test_faces": 0 if data.test is None else len(data.test),
            "test_split": stage.test_split,
        })
        if ctx.is_main:  # the other ranks of a torchrun write nothing
            write_json(REPORT, report)
    return report
