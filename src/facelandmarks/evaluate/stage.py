"""The ``evaluate`` stage: NME, failure rate, AUC and CED of the trained models, per data set, split and subset.

Reads ``params.yaml`` (sections ``evaluate``, ``scheme``, ``tracking``), the annotation table and the
checkpoints named in ``evaluate.models``; writes

* ``reports/metrics.json`` (DVC metrics): ``{model: {protocol: {dataset: {split: {group: numbers}}}}}``
  with ``faces``, ``detected`` (end to end), ``nme_inter_ocular``, ``nme_inter_pupil``, ``nme_box``,
  ``failure_rate_08``, ``auc_08``, ``failure_rate_10``, ``auc_10``
  (:func:`facelandmarks.evaluate.summary.group_metrics`; protocols in
  :mod:`facelandmarks.evaluate.protocols`);
* ``reports/plots/ced/<model>_<protocol>_<dataset>_<split>.csv`` (DVC plots, ``nme`` vs ``fraction``);
* ``reports/evaluation/faces.csv`` (per-face errors), ``reports/figures/ced.png`` and ``reports/metrics.md``
  (the tables for the README);
* the README's figures: ``reports/figures/demo_annotated.png`` and ``reports/figures/demo.gif`` (demo media
  only, annotated by ``evaluate.demo_model``);

and logs all of it to an MLflow child run of the pipeline's parent run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from facelandmarks.data.table import read_table
from facelandmarks.evaluate.config import EvaluateParams
from facelandmarks.evaluate.demo import make_demo_figures
from facelandmarks.evaluate.figures import plot_ced
from facelandmarks.evaluate.table import metrics_markdown
from facelandmarks.evaluate.protocols import ModelRun, predict_faces
from facelandmarks.evaluate.summary import ced_tables, face_errors, headline_metrics, metrics_tree
from facelandmarks.fsutil import atomic_dir, atomic_path, write_json
from facelandmarks.metrics.ced import threshold_key
from facelandmarks.params import load_params, section
from facelandmarks.schemes import get_scheme

__all__ = ["select_faces", "load_runs", "evaluate", "main"]

log = logging.getLogger(__name__)


def select_faces(df: pd.DataFrame, splits: list[str], max_faces: int = 0) -> pd.DataFrame:
    """Rows of the evaluated splits; with ``max_faces``, the first faces (by photo) of each data set and split.

    Raises:
        ValueError: no row of those splits.
    """
    rows = df[df["split"].isin(splits)].sort_values(["dataset", "split", "photo_id", "face_id"], kind="stable")
    if max_faces:
        rows = rows.groupby(["dataset", "split"], sort=False, group_keys=False).head(max_faces)
    if len(rows) == 0:
        raise ValueError(f"no annotated face in the splits {splits}")
    return rows.reset_index(drop=True)


def load_runs(params: EvaluateParams, faces: pd.DataFrame) -> list[ModelRun]:
    """Load every model of ``params.models`` (one shared MTCNN detector: the first model's stored settings with
    ``detector_min_score`` / ``detector_max_side`` / ``detector_rotate_angles`` over them) with the faces it is measured on.

    Raises:
        facelandmarks.model.checkpoint.CheckpointError: a checkpoint is missing or unreadable.
    """
    from facelandmarks.inference import FaceLandmarker

    from facelandmarks.detect.mtcnn import FaceDetector, detection_overrides

    runs: list[ModelRun] = []
    detector = None
    overrides = detection_overrides(params.detector_min_score, params.detector_max_side, params.detector_rotate_angles)
    for name, entry in params.models.items():
        lm = FaceLandmarker.load(entry.checkpoint, device=params.device, detector=detector)
        if detector is None and overrides:  # the product's detection settings over the stored ones
            lm.detector = FaceDetector(lm.detector.config.model_copy(update=overrides))
        detector = lm.detector
        rows = faces if not entry.datasets else faces[faces["dataset"].isin(entry.datasets)]
        runs.append(ModelRun(name, lm, set(rows["face_id"])))
    return runs


def evaluate(params: EvaluateParams, faces: pd.DataFrame, runs: list[ModelRun], scheme_name: str,
             progress: bool = True) -> dict[str, Any]:
    """Measure the models on the faces.

    Returns:
        ``{"metrics": tree, "errors": {(model, protocol): per-face DataFrame}, "curves": {(model, protocol,
        dataset, split): DataFrame}, "problems": [...], "seconds": float}``.
    """
    t0 = time.perf_counter()
    scheme = get_scheme(scheme_name)
    preds, problems = predict_faces(faces, runs, list(params.protocols), params.match_iou, params.batch_photos, progress)
    errors = {
        (run.name, protocol): face_errors(faces, preds[(run.name, protocol)], scheme, list(params.normalisers), run.face_ids)
        for run in runs
        for protocol in params.protocols
    }
    errors = {k: v for k, v in errors.items() if len(v)}
    tree = metrics_tree(errors, list(params.normalisers), params.curve_normaliser, list(params.thresholds), list(params.flags))
    curves = ced_tables(errors, params.curve_normaliser, params.ced.max_error, params.ced.step)
    return {"metrics": tree, "errors": errors, "curves": curves, "problems": problems,
            "seconds": time.perf_counter() - t0}


def write_outputs(params: EvaluateParams, result: dict[str, Any]) -> None:
    """Write metrics, CED CSVs, the per-face table and the figure (each atomically)."""
    write_json(params.metrics, {**result["metrics"], "faces_skipped": int(sum(p["faces"] for p in result["problems"]))})
    with atomic_dir(params.plots_dir) as tmp:
        for (model, protocol, dataset, split), c in result["curves"].items():
            c.to_csv(tmp / f"{model}_{protocol}_{dataset}_{split}.csv", index=False)
    table = pd.concat([df.assign(model=m, protocol=p) for (m, p), df in result["errors"].items()], ignore_index=True)
    with atomic_path(params.faces_table) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    split = "test" if "test" in params.splits else params.splits[-1]
    plot_ced(result["curves"], split, params.figure, params.curve_normaliser, tuple(params.thresholds))
    with atomic_path(params.markdown) as tmp:
        tmp.write_text(metrics_markdown(result["metrics"], split, tuple(threshold_key(t) for t in params.thresholds)))


def _print_summary(tree: dict[str, Any], key: str = "nme_inter_ocular") -> None:
    for model, protocols in tree.items():
        for protocol, datasets in protocols.items():
            for dataset, splits in datasets.items():
                for split, groups in splits.items():
                    a = groups["all"]
                    det = f", detected {a['detected']:.1%}" if "detected" in a else ""
                    v = a.get(key)
                    print(f"{model:>9} {protocol:>10} {dataset:>9} {split:>5}: {a['faces']:4d} faces, "
                          f"NME {v if v is None else f'{v:.4f}'}, FR@0.08 {a.get('failure_rate_08')}, "
                          f"AUC@0.08 {a.get('auc_08')}{det}")


def main(params_path: str = "params.yaml") -> dict[str, Any]:
    """Run the ``evaluate`` stage (cwd = project root). Returns the metrics tree."""
    from facelandmarks.mlflow_runs import flatten_metrics, key_params, log_to_parent, stage_run
    from facelandmarks.device import set_threads

    all_params = load_params(params_path)
    params = section(all_params, "evaluate", EvaluateParams, params_path)
    set_threads(params.num_threads)
    scheme_name = str(all_params.get("scheme", "ibug68"))
    faces = select_faces(read_table(params.annotations), params.splits, params.max_faces)
    runs = load_runs(params, faces)
    with stage_run("evaluate", all_params, run_name=f"evaluate {'+'.join(params.models)} ({'+'.join(params.protocols)})"):
        import mlflow

        result = evaluate(params, faces, runs, scheme_name)
        write_outputs(params, result)
        demo = {}
        if params.demo_model:
            demo = make_demo_figures({r.name: r.landmarker for r in runs}[params.demo_model], params.demo)
            for path in (params.demo.photo_out if params.demo.photo else None, params.demo.gif_out if params.demo.video else None):
                if path:
                    mlflow.log_artifact(path, "figures")
        mlflow.log_metrics(flatten_metrics(result["metrics"]))
        log_to_parent(headline_metrics(result["metrics"]), key_params(all_params))
        mlflow.log_metric("evaluate_seconds", result["seconds"])
        mlflow.log_metrics({f"demo/{k}": v for k, v in demo.items()})
        mlflow.log_artifact(params.metrics)
        mlflow.log_artifact(params.markdown)
        mlflow.log_artifact(params.faces_table, "evaluation")
        mlflow.log_artifacts(params.plots_dir, "plots/ced")
        if Path(params.figure).is_file():
            mlflow.log_artifact(params.figure, "figures")
        for run in runs:
            mlflow.set_tag(f"checkpoint_sha256.{run.name}", run.landmarker.checkpoint_sha256)
    _print_summary(result["metrics"])
    if result["problems"]:
        print(f"evaluate: {sum(p['faces'] for p in result['problems'])} faces skipped (unreadable photos)")
    print(f"evaluate: {sum(len(e) for e in result['errors'].values())} face evaluations in {result['seconds']:.1f} s")
    return result["metrics"]
