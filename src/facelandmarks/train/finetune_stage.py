"""The ``finetune`` stage: adapt the pretrained model to the second domain (InfAnFace).

Starts from ``finetune.init`` (``models/pretrain/model.pt``): the backbone always, the head too unless the
point scheme differs (or ``finetune.reinit_head: always``). Optionally freezes the first backbone stages and
gives backbone and head their own learning rates. Measures both the pretrained model (no finetuning) and the
finetuned one on the ``finetune.test_split`` crops of the data set, and writes ``models/finetune/model.pt`` and
``reports/finetune.json``.

Against forgetting, ``finetune.mix`` (e.g. ``{300w: 1.0}``) mixes adult training rows into every epoch; model
selection stays on the finetuning data set's validation split (InfAnFace val), and each mixed data set's
validation NME is reported for the pretrained and the chosen model (``val_nme_300w_pretrained`` /
``val_nme_300w_finetuned``). With ``finetune.wise_ft.alphas``, the stage then tries weight-space ensembles of
the trained and the pretrained weights (WiSE-FT, :func:`facelandmarks.train.transfer.interpolate_weights`) on the
same validation faces and keeps the one :func:`~facelandmarks.train.transfer.choose_alpha` picks: the lowest
InfAnFace val NME among those that forget at most ``max_forgetting`` on each mixed data set's val split (the
alpha, and every alpha's numbers, go to the report and MLflow). The finetuned model keeps the pretrained model's input normalisation and records its
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
from facelandmarks.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.network import LandmarkModel, build_model
from facelandmarks.train.distributed import process_group
from facelandmarks.train.params import FinetuneParams
from facelandmarks.train.runner import (
    best_checkpoint,
    evaluate_nme,
    load_stage_data,
    run_name,
    run_stage,
    setup_stage,
)
from facelandmarks.train.transfer import (
    choose_alpha,
    freeze_backbone_stages,
    frozen_modules_eval,
    interpolate_weights,
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

        def val_nme(m: torch.nn.Module, faces: Any, device: torch.device) -> float:
            return float(np.nanmean(evaluate_nme(m, faces, scheme, device)))

        pretrained_val: dict[str, float] = {}

        def before_fit(device: torch.device) -> dict[str, float]:
            pretrained, _ = load_checkpoint(init, map_location=device)
            pre = nme_on_test(pretrained, device)
            pretrained_val.update({name: val_nme(pretrained, faces, device) for name, faces in data.extra_val.items()})
            return {f"{stage.test_split}_nme_pretrained": pre, "val_nme_pretrained": val_nme(pretrained, data.val, device),
                    **{f"val_nme_{name}_pretrained": v for name, v in pretrained_val.items()}}

        wise: dict[str, Any] = {}

        def weight_ensemble(m: LandmarkModel, device: torch.device) -> dict[str, float]:
            """WiSE-FT: load the chosen ensemble into ``m`` and re-save the stage's checkpoint with it."""
            import mlflow

            pre_state = read_checkpoint(init)["state_dict"]
            ft_state = {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
            target, guard = {}, {}
            for alpha in sorted({*stage.wise_ft.alphas, 1.0}):
                m.load_state_dict(interpolate_weights(pre_state, ft_state, alpha))
                target[alpha] = val_nme(m, data.val, device)
                guard[alpha] = {name: val_nme(m, faces, device) for name, faces in data.extra_val.items()}
                mlflow.log_metrics({"wise_ft_val_nme": target[alpha],
                                    **{f"wise_ft_val_nme_{name}": v for name, v in guard[alpha].items()}},
                                   step=round(100 * alpha))
            limits = {name: v + stage.wise_ft.max_forgetting for name, v in pretrained_val.items()}
            alpha = choose_alpha(target, guard, limits)
            m.load_state_dict(interpolate_weights(pre_state, ft_state, alpha))
            best = best_checkpoint("finetune")
            if alpha != 1.0:
                meta = read_checkpoint(best)["meta"]
                save_checkpoint(best, m, {**meta, "val_nme": target[alpha], "wise_ft_alpha": alpha,
                                          "val_nme_before_wise_ft": target[1.0]})
            log.info("WiSE-FT: alpha %.2f kept (val NME %.4f; alpha 1: %.4f)", alpha, target[alpha], target[1.0])
            wise.update({"alpha": alpha, "val_nme": {str(a): v for a, v in target.items()},
                         **{f"val_nme_{name}": {str(a): g[name] for a, g in guard.items()} for name in limits},
                         "max_forgetting": stage.wise_ft.max_forgetting})
            return {"wise_ft_alpha": alpha, "val_nme_chosen": target[alpha]}

        def after_fit(m: LandmarkModel, device: torch.device) -> dict[str, float]:
            # m holds the chosen (best on the finetuning data set's val) weights
            chosen = weight_ensemble(m, device) if stage.wise_ft.alphas else {}
            return {**chosen, f"{stage.test_split}_nme_finetuned": nme_on_test(m, device),
                    **{f"val_nme_{name}_finetuned": val_nme(m, faces, device) for name, faces in data.extra_val.items()}}

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
            "wise_ft": wise or None,
        })
        if ctx.is_main:  # the other ranks of a torchrun write nothing
            write_json(REPORT, report)
    return report
