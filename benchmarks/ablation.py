"""Ablations: backbones, initialisation, data and decoder (pretrain), and finetuning against forgetting.

One command (``python -m benchmarks.ablation``, or ``make ablation``) trains every variant of
:data:`VARIANTS` with the project's own stage code (``pipelines/pretrain.py`` / ``pipelines/finetune.py``),
each in its own scratch folder under ``benchmarks/out/ablation/<name>/`` holding a ``params.yaml`` (the
project's, plus the variant's ``-S``-style overrides and the shared budget) and a link to the project's
``data/`` (the crop and augment stages' outputs, read only). Nothing of the project's workspace is
written except the results. Every variant is one MLflow parent run (with its stage run) in the experiment
``facelandmarks-ablation`` of the project's tracking store, so the variants are compared side by side in the
MLflow UI (key params and the headline validation NME are on the parent run).

Pretrain variants all train for the same budget (``--epochs``, default 4, on the same augmented 300-W rows, the
``+ytf`` row adding YouTube-Faces; the default pipeline trains on both for 16 epochs) and are selected and compared on 300-W **validation** NME (inter-ocular, 177
faces). Finetune variants start from the project's ``models/pretrain/model.pt`` and are compared on InfAnFace
validation NME (29 faces) and 300-W validation NME (what finetuning forgets). Test splits are never used here.

Speed: per face on real demo-photo crops (:func:`benchmarks.speed.landmark_model_speed`), batch 1 and 32,
``torch`` with 2 threads, flip test as configured (on by default: two passes per face).

Writes ``benchmarks/ablation.json`` and ``benchmarks/ablation.md`` (the README's table).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
import yaml

from facelandmarks.fsutil import atomic_path, write_json
from facelandmarks.mlflow_runs import tracking_uri
from facelandmarks.params_override import apply_overrides

log = logging.getLogger("benchmarks.ablation")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "ablation"
EXPERIMENT = "facelandmarks-ablation"

#: The pretrain variants compare against ImageNet MobileNetV2 on 300-W alone (the reference they were run
#: against; the default pipeline now also pretrains on YouTube-Faces, the ``+ytf`` row).
_300W_ONLY = ["pretrain.dataset=300w", "pretrain.variants_per_dataset={}", "train.heatmap_loss=0"]
#: The first finetune rows ran from the earlier 300-W-only pretrained model with the then default 1:1 mix,
#: all finetune rows but the ``-wise`` ones without WiSE-FT (the finetuned weights as trained).
_NO_WISE = ["finetune.wise_ft.alphas=[]", "train.heatmap_loss=0"]
_MIX1 = ["finetune.mix={300w: 1.0}", *_NO_WISE]
_MIX2 = ["finetune.mix={300w: 2.0}", *_NO_WISE]
_WISE = ["finetune.wise_ft.alphas=[0.5, 0.6, 0.7, 0.8, 0.9]", "finetune.wise_ft.max_forgetting=0.003", "train.heatmap_loss=0"]

#: name -> (stage, overrides, what it tests). The first pretrain row is the reference. Overrides apply on top
#: of params.yaml in order; every row pins what it compares, so a rerun measures the same thing.
VARIANTS: dict[str, tuple[str, list[str], str]] = {
    "mnv2-imagenet": ("pretrain", _300W_ONLY, "reference: ImageNet MobileNetV2, 160 px, heatmap stride 8, 300-W"),
    "mnv2-random": ("pretrain", [*_300W_ONLY, "model.pretrained=false"], "random initialisation"),
    "mnv2-imagenet+ytf": ("pretrain", ["pretrain.dataset=[300w, youtube_faces68]",
                                       "pretrain.variants_per_dataset={youtube_faces68: 1}", "train.heatmap_loss=0"],
                          "+ YouTube-Faces train frames (plain crops): the default since"),
    "mnv2-imagenet-stride4": ("pretrain", [*_300W_ONLY, "model.heatmap_stride=4"], "heatmap stride 4 (40x40 cells)"),
    "mnv2-imagenet-wing": ("pretrain", [*_300W_ONLY, "train.loss=wing"],
                           "Wing loss on coordinates (Feng et al. CVPR 2018; w 10, eps 2 crop px) instead of L1"),
    "mnv2-imagenet-hm3": ("pretrain", [*_300W_ONLY, "train.heatmap_loss=3.0"],
                          "+ heatmap supervision: DSNT regulariser (JS to a 1-cell Gaussian), weight 3"),
    "mnv2-imagenet-hm10": ("pretrain", [*_300W_ONLY, "train.heatmap_loss=10.0"],
                           "+ heatmap supervision: DSNT regulariser (JS to a 1-cell Gaussian), weight 10"),
    "mnv2-imagenet-hm30": ("pretrain", [*_300W_ONLY, "train.heatmap_loss=30.0"],
                           "+ heatmap supervision: DSNT regulariser (JS to a 1-cell Gaussian), weight 30"),
    "mnv2-imagenet-hm100": ("pretrain", [*_300W_ONLY, "train.heatmap_loss=100.0"],
                            "+ heatmap supervision: DSNT regulariser (JS to a 1-cell Gaussian), weight 100"),
    "mnv2-imagenet-regression": ("pretrain", [*_300W_ONLY, "model.head=regression"], "regression head (GAP + MLP), no heatmap"),
    "effnet-lite0-imagenet": ("pretrain", [*_300W_ONLY, "model.backbone=tf_efficientnet_lite0"], "ImageNet EfficientNet-Lite0"),
    "mnv3s-random": ("pretrain", [*_300W_ONLY, "model.backbone=mobilenetv3_small_100", "model.pretrained=false"],
                     "MobileNetV3-small (no offline ImageNet file: random init)"),
    "ft-default": ("finetune", _MIX1, "first default finetune: lr 2e-3 everywhere, 300-W mix 1.0"),
    "ft-backbone-lr": ("finetune", [*_MIX1, "finetune.backbone_lr=4.0e-4"], "backbone lr 4e-4, head 2e-3"),
    "ft-backbone-lr-mix2": ("finetune", [*_MIX2, "finetune.backbone_lr=4.0e-4"],
                            "backbone lr 4e-4, 300-W mix 2.0"),
    "ft-mix2": ("finetune", _MIX2, "300-W mix 2.0"),
    "ft-bn-frozen": ("finetune", [*_MIX1, "finetune.freeze_bn=true"], "backbone batch-norm statistics kept"),
    "ft-bn-frozen-mix2": ("finetune", [*_MIX2, "finetune.freeze_bn=true"],
                          "batch-norm statistics kept, 300-W mix 2.0"),
    "ft-freeze2": ("finetune", [*_MIX1, "finetune.freeze_stages=2", "finetune.lr=1.0e-3"],
                   "stem + 2 stages frozen, lr 1e-3"),
    # from the default pretrained model (models/pretrain/model.pt; measured with the 16-epoch one)
    "ft2-mix2": ("finetune", _MIX2, "the earlier default finetune: 300-W mix 2.0, lr 2e-3"),
    "ft2-mix1": ("finetune", _MIX1, "300-W mix 1.0"),
    "ft2-lr1e-3": ("finetune", [*_MIX2, "finetune.lr=1.0e-3"], "lr 1e-3, 300-W mix 2.0"),
    "ft2-mix1.5": ("finetune", ["finetune.mix={300w: 1.5}", *_NO_WISE], "300-W mix 1.5"),
    "ft2-mix1-wise": ("finetune", ["finetune.mix={300w: 1.0}", *_WISE],
                      "300-W mix 1.0 + WiSE-FT (the default since): alpha chosen on val"),
    "ft2-mix2-wise": ("finetune", ["finetune.mix={300w: 2.0}", *_WISE], "300-W mix 2.0 + WiSE-FT"),
    "ft2-ytf1-wise": ("finetune", ["finetune.mix={300w: 1.0, youtube_faces68: 1.0}", *_WISE],
                      "300-W mix 1.0 + YouTube-Faces mix 1.0 + WiSE-FT (guarded on both)"),
    "ft2-ytf05-wise": ("finetune", ["finetune.mix={300w: 1.0, youtube_faces68: 0.5}", *_WISE],
                       "300-W mix 1.0 + YouTube-Faces mix 0.5 + WiSE-FT (guarded on both)"),
    "ft2-ytf1-e16-wise": ("finetune", ["finetune.mix={300w: 1.0, youtube_faces68: 1.0}", "finetune.epochs=16", *_WISE],
                          "300-W mix 1.0 + YouTube-Faces mix 1.0, 16 epochs + WiSE-FT (guarded on both)"),
}

#: finetune rows that start from the earlier, 300-W-only pretrained model (run before YouTube-Faces pretraining)
EARLIER_INIT = {"ft-default", "ft-backbone-lr", "ft-backbone-lr-mix2", "ft-mix2", "ft-bn-frozen", "ft-bn-frozen-mix2",
                "ft-freeze2"}


def _tracking_uri() -> str:
    """The project's tracking store (:func:`facelandmarks.mlflow_runs.tracking_uri`), a relative sqlite path made
    absolute (the scratch folders have other working directories)."""
    uri = tracking_uri(yaml.safe_load((ROOT / "params.yaml").read_text()))
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str((ROOT / uri[len("sqlite:///"):]).resolve())
    return uri


def prepare(name: str, stage: str, overrides: list[str], epochs: int, data: Path = ROOT / "data",
            work_dir: Path = OUT) -> Path:
    """The scratch folder of one variant: ``params.yaml`` with its overrides, ``data`` -> ``data`` (the project's
    data folder, or a snapshot of it so that a running ``dvc repro`` cannot change it under the variants).

    Raises:
        FileNotFoundError: the project's crops / augmented table or pretrained model is missing.
    """
    needs = [data / "interim/crops.parquet", data / "processed/augmented.parquet"]
    needs += [ROOT / "models/pretrain/model.pt"] if stage == "finetune" else []
    for need in needs:
        if not need.exists():
            raise FileNotFoundError(f"{need}: missing (run `dvc repro augment` / `dvc repro pretrain` first)")
    work = Path(work_dir) / name
    work.mkdir(parents=True, exist_ok=True)
    link = work / "data"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(data.resolve(), target_is_directory=True)
    (work / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    budget = [f"pretrain.epochs={epochs}"] if stage == "pretrain" else [
        f"finetune.init={ROOT / 'models/pretrain/model.pt'}"]
    apply_overrides(work / "params.yaml", [
        f"tracking.experiment={EXPERIMENT}", f"tracking.artifact_location={ROOT / 'mlartifacts'}",
        "train.progress=false", "train.log_model=false", "train.resume=false", *budget, *overrides])
    return work


def train(work: Path, stage: str) -> dict:
    """Run one stage in ``work`` (a subprocess; its log goes to ``work/stage.log``); returns its report.

    Raises:
        RuntimeError: the stage failed (the log's last lines in the message).
    """
    env = {**os.environ, "MLFLOW_TRACKING_URI": _tracking_uri()}
    env.pop("FACELANDMARKS_PARENT_RUN_ID", None)
    logfile = work / "stage.log"
    t = time.perf_counter()
    with open(logfile, "w") as f:
        rc = subprocess.call([sys.executable, str(ROOT / "pipelines" / f"{stage}.py")], cwd=work, env=env,
                             stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = "\n".join(logfile.read_text().splitlines()[-15:])
        raise RuntimeError(f"{work.name}: {stage} failed (exit {rc}); {logfile}:\n{tail}")
    report = json.loads((work / "reports" / f"{stage}.json").read_text())
    report["wall_s"] = round(time.perf_counter() - t, 1)
    return report


def speed(checkpoint: Path) -> dict:
    """Landmark network ms/face (torch, 2 threads) at batch 1 and 32 on demo-photo crops."""
    from benchmarks.speed import (
        DEMO_IMAGES,
        SpeedOptions,
        demo_faces,
        landmark_model_speed,
    )
    from facelandmarks.inference.landmarker import FaceLandmarker

    torch.set_num_threads(2)
    landmarker = FaceLandmarker.load(checkpoint, device="cpu")
    _, crops = demo_faces(landmarker, ROOT / DEMO_IMAGES)
    res = landmark_model_speed(landmarker.predict_crops, crops, "cpu", SpeedOptions(runs=10, warmup=3))
    return {k: round(v["median_ms"], 2) for k, v in res.items()}


def adult_val_nme(checkpoint: Path, work: Path, datasets: tuple[str, ...] = ("youtube_faces68",)) -> dict[str, float]:
    """Validation NME (inter-ocular, fraction, all faces, the model's flip test) of a finetuned checkpoint on
    adult data sets a finetune variant may not have mixed in (what finetuning forgets there).

    Args:
        checkpoint: the variant's ``models/finetune/model.pt``.
        work: the variant's scratch folder (its ``data/`` link holds the crops table).
        datasets: data set names of the crops table's ``val`` split.
    Returns:
        ``{"val_nme_<name>": NME}`` for each data set with validation crops (mean over all its faces,
        visible points only; inter-ocular = outer eye corners, 300-W's normaliser).
    Raises:
        facelandmarks.model.checkpoint.CheckpointError: the checkpoint is missing or unreadable.
        ValueError: none of a data set's validation crops could be read.
    """
    from facelandmarks.data.table import read_table
    from facelandmarks.model.checkpoint import load_checkpoint
    from facelandmarks.schemes import get_scheme
    from facelandmarks.train.dataset import load_faces
    from facelandmarks.train.runner import CROPS_TABLE, evaluate_nme

    torch.set_num_threads(2)
    model, config = load_checkpoint(checkpoint)
    table = read_table(work / CROPS_TABLE)
    out = {}
    for name in datasets:
        rows = table[(table["dataset"] == name) & (table["split"] == "val")]
        if len(rows):  # crop paths are relative to the project root: the scratch folder's data/ link
            faces = load_faces(rows, work, "crop_path", "crop_landmarks", size=config.input_size)
            per_face = evaluate_nme(model, faces, get_scheme(config.scheme), torch.device("cpu"))
            out[f"val_nme_{name}"] = float(np.nanmean(per_face))
    return out


def _pct(x) -> str:
    return "" if x is None else f"{100 * float(x):.2f} %"


def _rows(rows: list[tuple[str, dict]], cells) -> list[str]:
    """Markdown rows: name, what changes, then ``cells(row)`` (a failed variant shows its error instead)."""
    out = []
    for n, r in rows:
        body = [f"FAILED: {r['error'][:80]}"] if "error" in r else cells(r)
        out.append("| " + " | ".join([n, r["what"], *body]) + " |")
    return out


def table(rows: dict[str, dict], epochs: int) -> str:
    """The README's markdown tables of the results, rows in :data:`VARIANTS` order (then any others)."""
    rows = {**{n: rows[n] for n in VARIANTS if n in rows}, **rows}
    pre = [(n, r) for n, r in rows.items() if r.get("stage") == "pretrain"]
    fin = [(n, r) for n, r in rows.items() if r.get("stage") == "finetune"]
    lines = [f"Pretrain ablation: {epochs} epochs each on the same augmented 300-W rows (the +ytf row adds YouTube-Faces; "
             "default pipeline: both, 15 epochs), "
             "selected on 300-W val (177 faces), NME inter-ocular; ms/face: torch, 2 CPU threads, flip test.", "",
             "| variant | what changes | 300-W val NME | params | ms/face b1 | ms/face b32 | train min |",
             "|---|---|---|---|---|---|---|"]
    lines += _rows(pre, lambda r: [_pct(r["best_val_nme"]), f"{r['n_params'] / 1e6:.2f} M",
                                   str(r["speed"].get("batch_1", "")), str(r["speed"].get("batch_32", "")),
                                   f"{r['train_seconds'] / 60:.1f}"])
    groups = [("Finetune against forgetting, from the earlier pretrained model (300-W only, 12 epochs; 10 epochs of "
               "finetuning), selected on InfAnFace val (29 faces); 300-W val (177 faces) shows what is forgotten:",
               [(n, r) for n, r in fin if n in EARLIER_INIT]),
              ("Finetune from the default pretrained model of that time (300-W + YouTube-Faces, 16 epochs), same protocol:",
               [(n, r) for n, r in fin if n not in EARLIER_INIT])]
    for title, group in groups:
        if not group:
            continue
        before = next((r.get("val_nme_300w_pretrained") for _, r in group if "error" not in r), None)
        ytf_before = next((r["val_nme_youtube_faces68_pretrained"] for _, r in group
                           if r.get("val_nme_youtube_faces68_pretrained") is not None), None)
        lines += ["", title, "",
                  f"| variant | what changes | InfAnFace val NME | 300-W val NME (pretrained: {_pct(before)}) "
                  f"| YouTube-Faces val NME (pretrained: {_pct(ytf_before)}) | WiSE-FT alpha | train min |",
                  "|---|---|---|---|---|---|---|"]
        lines += _rows(group, lambda r: [_pct(r.get("val_nme_chosen") or r["best_val_nme"]),
                                         _pct(r.get("val_nme_300w_finetuned")), _pct(r.get("val_nme_youtube_faces68")),
                                         "" if r.get("wise_ft_alpha") is None else f"{r['wise_ft_alpha']:.1f}",
                                         f"{r['train_seconds'] / 60:.1f}"])
    return "\n".join(lines) + "\n"


def main(
    only: Annotated[list[str], typer.Option("--only", help="variant names (repeatable); default: all")] = [],
    epochs: Annotated[int, typer.Option(help="pretrain epochs of every pretrain variant")] = 4,
    out: Annotated[Path, typer.Option(help="results JSON; the markdown table goes beside it")] = ROOT / "benchmarks" / "ablation.json",
    rerun: Annotated[bool, typer.Option(help="train again even when a variant's report exists")] = False,
    data: Annotated[Path, typer.Option(help="the data folder the variants read (crops, augmented rows)")] = ROOT / "data",
    work_dir: Annotated[Path, typer.Option(help="where each variant's scratch folder goes")] = OUT,
) -> None:
    """Train the ablation variants one after another; write the JSON and markdown tables."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    unknown = set(only) - set(VARIANTS)
    if unknown:
        raise typer.BadParameter(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)}")
    rows: dict[str, dict] = json.loads(out.read_text())["variants"] if out.exists() else {}
    for name, (stage, overrides, what) in VARIANTS.items():
        if only and name not in only:
            continue
        work = prepare(name, stage, overrides, epochs, data, work_dir)
        report_file = work / "reports" / f"{stage}.json"
        log.info("%s: %s %s", name, stage, overrides)
        try:
            report = json.loads(report_file.read_text()) if (report_file.exists() and not rerun) else train(work, stage)
            row = {k: report.get(k) for k in ("stage", "best_val_nme", "best_epoch", "epochs_run", "n_params",
                                              "train_seconds", "val_nme_300w_pretrained", "val_nme_300w_finetuned",
                                              "val_nme_chosen", "wise_ft_alpha", "val_nme_youtube_faces68_pretrained", "mlflow_parent_run_id", "pretrained_source", "backbone", "head")}
            row["speed"] = speed(work / report["checkpoint"]) if stage == "pretrain" else {}
            if stage == "finetune":
                row.update(adult_val_nme(work / report["checkpoint"], work))
        except Exception as exc:  # one failed variant is reported, the others still run
            log.exception("%s failed", name)
            row = {"stage": stage, "error": f"{type(exc).__name__}: {exc}"}
        rows[name] = {**row, "what": what, "overrides": overrides}
        write_json(out, {"epochs": epochs, "experiment": EXPERIMENT, "variants": rows})
        with atomic_path(out.with_suffix(".md")) as tmp:
            tmp.write_text(table(rows, epochs))
    failed = [n for n, r in rows.items() if "error" in r]
    if failed:
        log.error("failed variants: %s (logs: %s/<name>/stage.log)", failed, work_dir)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
