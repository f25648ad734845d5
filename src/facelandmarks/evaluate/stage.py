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

import numpy as np
import pandas as pd

from facelandmarks.data.table import read_table
from facelandmarks.evaluate.config import EvaluateParams
from facelandmarks.evaluate.demo import make_demo_figures
from facelandmarks.evaluate.figures import plot_ced
from facelandmarks.evaluate.table import metrics_markdown
from facelandmarks.evaluate.protocols import ModelRun, Predictions, predict_faces
from facelandmarks.evaluate.summary import ced_tables, face_errors, headline_metrics, metrics_tree
from facelandmarks.fsutil import atomic_dir, atomic_path, write_json
from facelandmarks.io.photos import group_photo_files
from facelandmarks.metrics.ced import threshold_key
from facelandmarks.params import load_params, section
from facelandmarks.schemes import get_scheme
from facelandmarks.workers import process_pool

__all__ = ["select_faces", "load_runs", "predict_in_pool", "evaluate", "main"]

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


#: the models of a pool worker (:func:`_start_worker`), loaded once per process
_WORKER_RUNS: list[ModelRun] = []

#: MTCNN batches (``evaluate.batch_photos`` images each: HELEN keeps one image file per face) per pool task
_BATCHES_PER_TASK = 4


def _start_worker(params: EvaluateParams, faces: pd.DataFrame) -> None:
    """Pool initializer: the stage's torch threads, then the models, as :func:`main` loads them."""
    from facelandmarks.device import set_threads

    set_threads(params.num_threads)
    _WORKER_RUNS[:] = load_runs(params, faces)


def _predict_task(faces: pd.DataFrame, protocols: list[str], match_iou: float,
                  batch_photos: int) -> tuple[dict[tuple[str, str], Predictions], list[dict]]:
    """Pool task: :func:`facelandmarks.evaluate.protocols.predict_faces` on one chunk of photos."""
    return predict_faces(faces, _WORKER_RUNS, protocols, match_iou, batch_photos, progress=False)


def _image_chunks(rows: pd.DataFrame, images: int) -> list[pd.DataFrame]:
    """Cut rows (sorted by ``photo_id``) into chunks of ``images`` consecutive images, as ``predict_faces`` meets them.

    An image is a distinct content of a photo (:func:`facelandmarks.io.photos.group_photo_files`: AFW's
    byte-identical copies are one image, HELEN's per-face files are several), so a chunk may end inside a
    photo; ``predict_faces`` on a chunk then reads exactly the chunk's images, in the same order, and its
    batches of ``batch_photos`` images are the one-process run's batches.
    """
    rows = rows.reset_index(drop=True)
    chunk = np.empty(len(rows), np.int64)
    n = 0
    for _, g in rows.groupby("photo_id", sort=False):
        where = g["image_path"].astype(str).to_numpy()
        for paths, _, _ in group_photo_files(list(where)):
            chunk[g.index[np.isin(where, paths)]] = n // images
            n += 1
    return [rows[chunk == k] for k in range(int(chunk.max()) + 1)] if len(rows) else []


def predict_in_pool(params: EvaluateParams, faces: pd.DataFrame, runs: list[ModelRun], workers: int,
                    progress: bool = True) -> tuple[dict[tuple[str, str], Predictions], list[dict]]:
    """:func:`facelandmarks.evaluate.protocols.predict_faces` in a pool of ``workers`` processes on this machine.

    The images are taken in the order ``predict_faces`` takes them (by ``photo_id``, then content) and cut into
    chunks of ``4 x evaluate.batch_photos`` images (:func:`_image_chunks`), so every MTCNN pass and every model
    batch holds the same images as in one process; each worker loads the models once (:func:`load_runs`) and
    runs ``evaluate.num_threads`` torch threads. The predictions are therefore identical to one process's
    (MTCNN's numbers depend on which images share a batch); an unreadable image keeps its slot in both.

    Args:
        params: the stage's settings (models, protocols, ``match_iou``, ``batch_photos``, ``num_threads``).
        faces: the evaluated annotation rows (:func:`select_faces`).
        runs: the models as loaded here (their ``face_ids`` choose the photos).
        workers: processes (>= 1).
        progress: show a tqdm bar (faces).
    Returns:
        as ``predict_faces``: ``({(model, protocol): Predictions}, problems)``, problems in photo order.
    Raises:
        ValueError: ``workers < 1``. A worker's error (e.g. a checkpoint it cannot load) is raised here.
    """
    from tqdm import tqdm

    wanted = set().union(*(r.face_ids for r in runs)) if runs else set()
    rows = faces[[f in wanted for f in faces["face_id"]]].sort_values("photo_id", kind="stable")
    chunks = _image_chunks(rows, params.batch_photos * _BATCHES_PER_TASK)
    out = {(r.name, p): Predictions() for r in runs for p in params.protocols}
    problems: list[dict] = []
    with process_pool(workers, _start_worker, (params, faces)) as pool, \
            tqdm(total=len(rows), desc="evaluate", unit="face", disable=not progress) as bar:
        futures = [pool.submit(_predict_task, c, list(params.protocols), params.match_iou, params.batch_photos)
                   for c in chunks]
        for chunk, future in zip(chunks, futures):  # merged in chunk order
            part, chunk_problems = future.result()
            for key, p in part.items():
                out[key].landmarks.update(p.landmarks)
                out[key].det_iou.update(p.det_iou)
                out[key].missed |= p.missed
            problems += chunk_problems
            bar.update(len(chunk))
    return out, problems


def evaluate(params: EvaluateParams, faces: pd.DataFrame, runs: list[ModelRun], scheme_name: str,
             progress: bool = True) -> dict[str, Any]:
    """Measure the models on the faces (predictions in this process, or in ``evaluate.workers`` processes:
    :func:`predict_in_pool`).

    Returns:
        ``{"metrics": tree, "errors": {(model, protocol): per-face DataFrame}, "curves": {(model, protocol,
        dataset, split): DataFrame}, "problems": [...], "seconds": float}``.
    """
    t0 = time.perf_counter()
    scheme = get_scheme(scheme_name)
    if params.workers > 1:
        preds, problems = predict_in_pool(params, faces, runs, params.workers, progress)
    else:
        preds, problems = predict_faces(faces, runs, list(params.protocols), params.match_iou, params.batch_photos,
                                        progress)
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
