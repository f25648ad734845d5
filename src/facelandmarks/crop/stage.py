"""The ``crop`` stage: annotation table -> square face crops + ``crops.parquet`` + ``reports/crop.json``.

For every distinct image file (AFW stores one byte-identical copy of a photo per face: those are
read and detected once; HELEN stores a different crop of the photo per face) MTCNN finds the
faces; each annotated face is matched to a detection by IoU with the box around its landmarks (:func:`facelandmarks.detect.matching.match_boxes`). A matched face is cut
from its MTCNN box, exactly as inference will cut it; a missed face falls back to an MTCNN-like box
derived from its landmarks (:func:`facelandmarks.crop.faces.fallback_box`). Misses and fallbacks are
counted per data set. Unreadable photos and unusable faces are reported and skipped, never fatal.

The work is done in chunks of consecutive photos (:func:`photo_chunks`, :func:`crop_chunk`), in this process,
in a pool of processes on this machine (``crop.cluster.backend: processes``) or as one Dask task per chunk
(``dask``, :func:`dask_client`); the chunks depend on the table alone, so all three give byte-identical tables
and crops.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from concurrent.futures import Executor
from concurrent.futures import as_completed as futures_completed
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from tqdm import tqdm

from facelandmarks.crop.config import CropCluster, CropConfig, FallbackConfig
from facelandmarks.crop.faces import crop_face, fallback_box
from facelandmarks.crop.geometry import invert_affine, map_points
from facelandmarks.data.table import landmarks_bbox, read_table, write_table
from facelandmarks.detect.matching import match_boxes
from facelandmarks.detect.mtcnn import Detections, DetectorConfig, FaceDetector
from facelandmarks.fsutil import atomic_dir, write_json
from facelandmarks.io.images import write_image
from facelandmarks.io.photos import iter_photo_images
from facelandmarks.params import load_params, section
from facelandmarks.workers import process_pool

__all__ = ["ChunkResult", "CropParams", "crop_chunk", "crop_faces", "dask_client", "main", "photo_chunks"]

log = logging.getLogger(__name__)


class CropParams(CropConfig):
    """The ``crop`` section of params.yaml: :class:`CropConfig` (what a model stores) plus the stage's knobs.

    Attributes:
        detector: MTCNN settings.
        match_iou: smallest IoU between an MTCNN box and the landmark box that counts as a detection.
        fallback: landmark box -> MTCNN-like box, for missed faces.
        num_threads: torch CPU threads (0 = torch's default).
        read_workers: threads decoding photos ahead of the detector (per process / Dask worker).
        cluster: where the chunks of photos are cropped: this process, or a Dask cluster
            (:class:`facelandmarks.crop.config.CropCluster`); the outputs are identical.
        annotations, table, out_dir, report: input and output paths (relative to the project root).
    """

    detector: DetectorConfig = DetectorConfig()
    match_iou: float = Field(0.3, ge=0.0, le=1.0)
    fallback: FallbackConfig = FallbackConfig()
    num_threads: int = Field(0, ge=0)
    read_workers: int = Field(2, ge=1)
    cluster: CropCluster = CropCluster()
    annotations: str = "data/interim/annotations.parquet"
    table: str = "data/interim/crops.parquet"
    out_dir: str = "data/interim/crops"
    report: str = "reports/crop.json"

    def crop_config(self) -> CropConfig:
        """The geometry part, to store with a model (``.model_dump()``)."""
        return CropConfig(**{k: getattr(self, k) for k in CropConfig.model_fields})


def crop_faces(
    df: pd.DataFrame,
    params: CropParams,
    out_dir: str | Path,
    crop_root: str | Path | None = None,
    detector: FaceDetector | None = None,
    progress: bool = True,
    client: Any = None,
) -> tuple[pd.DataFrame, dict]:
    """Detect, match and crop every annotated face of a table.

    Photos are split into chunks of consecutive photos (:func:`photo_chunks`); each chunk is read,
    detected (one :meth:`FaceDetector.detect` call) and cropped by :func:`crop_chunk`, in this process
    or, with ``client``, as one task per chunk in a process pool or on a Dask cluster. The chunks, and so every
    MTCNN batch, are the same either way, so the rows, crops and PNG bytes are identical (given equal torch
    threads).

    Args:
        df: annotation table (:mod:`facelandmarks.data.table`).
        params: stage settings.
        out_dir: folder the crop PNGs are written into (``<face_id>.png``); with ``client`` every worker
            must be able to write there (a shared file system; a LocalCluster is on this machine).
        crop_root: folder recorded in ``crop_path`` (where ``out_dir`` will finally live, e.g. after an
            atomic rename); ``out_dir`` when None.
        detector: an existing detector (built from ``params.detector`` when None; local runs only).
        progress: show a tqdm bar.
        client: a ``concurrent.futures.Executor`` (:func:`facelandmarks.workers.process_pool`) or a
            ``distributed.Client`` (see :func:`dask_client`) to fan the chunks out over; None: this process. Workers read photos by the table's ``image_path``, relative to THEIR working
            directory, which must therefore be the project root (a LocalCluster's is this process's).
    Returns:
        ``(crops, report)``. ``crops`` holds the annotation row of every cropped face plus
        ``crop_path``, ``crop_landmarks (K, 2) float32`` (crop pixels), ``crop_to_photo (2, 3) float64``,
        ``det_source`` (``mtcnn``/``landmarks``), ``det_score`` and ``det_iou`` (NaN for fallbacks),
        ``det_box (4,) float32`` (the box the square was derived from: MTCNN's, or the fallback), and
        ``best_iou`` (the best IoU of the landmark box with any detection, 0 when none); rows in the
        order of ``df``.
        ``report`` counts per data set: faces, photos, cropped, detected, fallbacks, detection_rate,
        mean_iou, mean_score, photos_unreadable (image files), faces_skipped, per-subset detection
        rates; overall: the fallback ``calibration`` measured on matched faces, images_decoded,
        wall_s, detect_s (summed over workers), faces_per_s, device, ``cluster`` (backend, workers,
        chunks), and the list of problems.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    crop_root = Path(crop_root) if crop_root is not None else out_dir
    chunks = photo_chunks(df, chunk_photos(params))
    bar = tqdm(total=len(df), desc="crop", unit="face", disable=not progress)
    results: list[ChunkResult] = []
    try:
        if client is None:
            detector = detector or FaceDetector(params.detector)
            for chunk in chunks:
                results.append(crop_chunk(chunk, params, out_dir, crop_root, detector))
                bar.update(len(chunk))
            workers = 1
        elif isinstance(client, Executor):
            futures = [client.submit(_crop_chunk_task, c, params, str(out_dir.resolve()), str(crop_root))
                       for c in chunks]
            sizes = {f: len(c) for f, c in zip(futures, chunks)}
            for f in futures_completed(futures):
                bar.update(sizes[f])
            results = [f.result() for f in futures]  # in chunk order; a worker's exception is raised here
            workers = params.cluster.workers
        else:
            from distributed import as_completed

            workers = _check_workers(client, df, out_dir)
            futures = client.map(_crop_chunk_task, chunks, params=params, out_dir=str(out_dir.resolve()),
                                 crop_root=str(crop_root), pure=False)
            sizes = {f.key: len(c) for f, c in zip(futures, chunks)}
            for f in as_completed(futures):
                bar.update(sizes[f.key])
            results = client.gather(futures)  # in chunk order
    finally:
        bar.close()
    rows = [r for res in results for r in res.rows]
    problems = [p for res in results for p in res.problems]
    new = pd.DataFrame(rows, columns=_NEW_COLUMNS)
    crops = df.merge(new, on="face_id", how="inner", validate="one_to_one").reset_index(drop=True)
    wall = time.perf_counter() - t0
    device = results[0].device if results else params.detector.device
    report = _report(df, crops, problems, wall, sum(r.detect_s for r in results), device)
    report["images_decoded"] = sum(r.images for r in results)
    backend = "local" if client is None else "processes" if isinstance(client, Executor) else "dask"
    report["cluster"] = {"backend": backend, "workers": workers, "chunks": len(chunks)}
    return crops, report


def chunk_photos(params: CropParams) -> int:
    """Photos per chunk: ``max(4 x detector.batch_size, 8)`` (the batch the single-process stage always used)."""
    return max(params.detector.batch_size * 4, 8)


def photo_chunks(df: pd.DataFrame, photos: int) -> list[pd.DataFrame]:
    """Split a table into chunks of ``photos`` consecutive photos (all faces of a photo in one chunk).

    Photos are taken in order of first appearance of their ``photo_id``; a chunk keeps its rows in the
    order of ``df``. The split depends on the table alone (never on workers, timing or readability),
    so a chunk is the same unit of work in the single-process stage and on any cluster.

    Args:
        df: annotation rows with ``photo_id``.
        photos: photos per chunk (>= 1); the last chunk may hold fewer.
    Returns:
        the chunks, in order; empty for an empty table.
    Raises:
        ValueError: ``photos < 1``. KeyError: no ``photo_id`` column.
    """
    if photos < 1:
        raise ValueError(f"photos per chunk must be >= 1, got {photos}")
    codes, _ = pd.factorize(df["photo_id"], sort=False)
    index = codes // photos
    return [df[index == k] for k in range(int(index.max()) + 1)] if len(df) else []


@dataclass
class ChunkResult:
    """What :func:`crop_chunk` returns for one chunk of photos.

    Attributes:
        rows: one dict per cropped face (``_NEW_COLUMNS``), in photo order.
        problems: unreadable photos and unusable faces, in the order met.
        images: distinct image files decoded.
        detect_s: seconds in MTCNN.
        device: where MTCNN ran (``cpu``, ``cuda``).
    """

    rows: list[dict]
    problems: list[dict]
    images: int
    detect_s: float
    device: str


def crop_chunk(
    faces: pd.DataFrame,
    params: CropParams,
    out_dir: str | Path,
    crop_root: str | Path,
    detector: FaceDetector | None = None,
) -> ChunkResult:
    """Read, detect and crop the photos of one chunk (:func:`photo_chunks`): the per-photo work of the stage.

    All readable images of the chunk go through ONE :meth:`FaceDetector.detect` call (which batches
    equal sizes ``detector.batch_size`` at a time); each photo's faces are then matched and cut
    (:func:`_crop_photo`) and written as ``out_dir/<face_id>.png``. Unreadable photos become problems.

    Args:
        faces: the chunk's annotation rows.
        params, out_dir, crop_root: as :func:`crop_faces`.
        detector: the detector to use (a per-process cached one built from ``params.detector`` when None).
    Returns:
        :class:`ChunkResult`.
    """
    detector = detector or _cached_detector(params.detector)
    out_dir, crop_root = Path(out_dir), Path(crop_root)
    cfg = params.crop_config()
    problems: list[dict] = []
    ok: list[tuple[np.ndarray, pd.DataFrame]] = []
    images = 0
    for photo in iter_photo_images(faces, workers=params.read_workers, prefetch=chunk_photos(params)):
        images += 1
        if photo.image is None:
            log.warning("crop: skipping %s (%d faces): %s", photo.paths[0], len(photo.faces), photo.error)
            problems.append({"photo_id": photo.photo_id, "dataset": photo.faces["dataset"].iloc[0],
                             "faces": len(photo.faces), "reason": "unreadable", "detail": photo.error})
            continue
        ok.append((photo.image, photo.faces))
    ts = time.perf_counter()
    dets = detector.detect([img for img, _ in ok]) if ok else []
    detect_s = time.perf_counter() - ts
    rows: list[dict] = []
    for (img, photo_faces), det in zip(ok, dets):
        rows += _crop_photo(img, photo_faces, det, params, cfg, out_dir, crop_root, problems)
    return ChunkResult(rows, problems, images, detect_s, str(detector.device))


_DETECTORS: dict[str, FaceDetector] = {}


def _cached_detector(config: DetectorConfig) -> FaceDetector:
    """One MTCNN per process and config (a Dask worker loads it once, not once per chunk)."""
    key = config.model_dump_json()
    if key not in _DETECTORS:
        _DETECTORS[key] = FaceDetector(config)
    return _DETECTORS[key]


def _crop_chunk_task(faces: pd.DataFrame, params: CropParams, out_dir: str, crop_root: str) -> ChunkResult:
    """A pool or Dask task: :func:`crop_chunk` with the stage's torch thread count (Dask workers default to 1)."""
    if params.num_threads:
        import torch

        if torch.get_num_threads() != params.num_threads:
            torch.set_num_threads(params.num_threads)
    return crop_chunk(faces, params, out_dir, crop_root)


def _worker_sees(image_path: str, out_dir: str) -> str | None:
    """Run on each worker: None when it can read ``image_path`` and write into ``out_dir``, else why not."""
    import os

    if not Path(image_path).is_file():
        return f"cannot see {image_path} from working directory {os.getcwd()}"
    if not os.access(out_dir, os.W_OK):
        return f"cannot write into {out_dir}"
    return None


def _check_workers(client: Any, df: pd.DataFrame, out_dir: Path) -> int:
    """Every worker must see the project's photos and the output folder; returns the number of workers.

    Raises:
        RuntimeError: the cluster has no worker, or a worker lacks the files (names worker and file).
    """
    if len(df) == 0:
        return len(client.scheduler_info()["workers"])
    answers = client.run(_worker_sees, str(df["image_path"].iloc[0]), str(out_dir.resolve()))
    if not answers:
        raise RuntimeError("crop: the Dask cluster has no workers")
    bad = {w: a for w, a in answers.items() if a}
    if bad:
        raise RuntimeError(
            "crop: Dask workers must run in the project root on a file system shared with this process: "
            + "; ".join(f"{w}: {a}" for w, a in sorted(bad.items()))
        )
    return len(answers)


@contextmanager
def _client(cluster: CropCluster) -> Iterator[Any]:
    """:func:`dask_client` for ``backend: dask``, a process pool for ``processes``, else None (this process)."""
    if cluster.backend == "local":
        yield None
        return
    with (process_pool(cluster.workers) if cluster.backend == "processes" else dask_client(cluster)) as client:
        yield client


@contextmanager
def dask_client(cluster: CropCluster) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster`` (``backend: dask``), closed on exit.

    ``address`` set: connect to that scheduler (e.g. ``tcp://10.0.0.5:8786``). ``address`` null: start a
    LocalCluster of ``workers`` processes (one thread each, no dashboard, on 127.0.0.1) and stop it on exit.
    """
    from distributed import Client, LocalCluster

    if cluster.address:
        with Client(cluster.address, timeout=cluster.connect_timeout_s) as client:
            yield client
        return
    with LocalCluster(n_workers=cluster.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local, Client(local) as client:
        yield client


_NEW_COLUMNS = [
    "face_id", "det_source", "det_score", "det_iou", "crop_path", "crop_landmarks", "crop_to_photo", "det_box", "best_iou",
]


def _crop_photo(
    img: np.ndarray,
    faces: pd.DataFrame,
    det: Detections,
    params: CropParams,
    cfg: CropConfig,
    out_dir: Path,
    crop_root: Path,
    problems: list[dict],
) -> list[dict]:
    """Match one photo's detections to its annotated faces and write their crops."""
    lm_boxes = np.stack([landmarks_bbox(np.asarray(lm)) for lm in faces["landmarks"]])
    index, ious = match_boxes(det.boxes, lm_boxes, params.match_iou)
    rows = []
    for j, (_, face) in enumerate(faces.iterrows()):
        row = {"face_id": face["face_id"]}
        lm = np.asarray(face["landmarks"], dtype=np.float64)
        try:
            if index[j] >= 0:
                box = det.boxes[index[j]].astype(np.float32)
                row.update(det_source="mtcnn", det_score=float(det.scores[index[j]]), det_iou=float(ious[j]))
            else:
                box = fallback_box(lm, params.fallback)
                row.update(det_source="landmarks", det_score=float("nan"), det_iou=float("nan"))
            crop, c2p = crop_face(img, box, cfg)
        except ValueError as e:
            log.warning("crop: skipping face %s: %s", face["face_id"], e)
            problems.append({"photo_id": face["photo_id"], "dataset": face["dataset"], "faces": 1,
                             "reason": "no_usable_face", "detail": str(e)})
            continue
        rel = Path(f"{face['face_id']}.png")
        write_image(out_dir / rel, crop)
        row.update(
            crop_path=str(crop_root / rel),
            crop_landmarks=map_points(lm, invert_affine(c2p)).astype(np.float32),
            crop_to_photo=c2p,
            det_box=np.asarray(box, dtype=np.float32),
            best_iou=float(ious[j]),
        )
        rows.append(row)
    return rows


def _calibration(crops: pd.DataFrame) -> dict:
    """Median MTCNN box relative to the landmark box, over matched faces: the fallback's numbers."""
    m = crops[crops["det_source"] == "mtcnn"] if len(crops) else crops
    if len(m) == 0:
        return {}
    lb = np.stack(m["bbox"].to_numpy()).astype(np.float64)
    db = np.stack(m["det_box"].to_numpy()).astype(np.float64)
    side = np.maximum(lb[:, 2] - lb[:, 0], lb[:, 3] - lb[:, 1])
    dside = np.maximum(db[:, 2] - db[:, 0], db[:, 3] - db[:, 1])
    out = {"faces": int(len(m))}
    out["scale"] = float(np.median(dside / side))
    out["dx"] = float(np.median(((db[:, 0] + db[:, 2]) - (lb[:, 0] + lb[:, 2])) / 2 / side))
    out["dy"] = float(np.median(((db[:, 1] + db[:, 3]) - (lb[:, 1] + lb[:, 3])) / 2 / side))
    return out


def _report(df: pd.DataFrame, crops: pd.DataFrame, problems: list[dict], wall: float, t_detect: float, device: str) -> dict:
    skipped = defaultdict(lambda: defaultdict(int))
    for p in problems:
        skipped[p["dataset"]][p["reason"]] += p["faces"] if p["reason"] == "unreadable" else 1
    unreadable_photos = defaultdict(int)
    for p in problems:
        if p["reason"] == "unreadable":
            unreadable_photos[p["dataset"]] += 1
    datasets = {}
    for name in sorted(df["dataset"].unique()):
        sub = crops[crops["dataset"] == name] if len(crops) else crops
        det = sub[sub["det_source"] == "mtcnn"] if len(sub) else sub
        n = int(len(sub))
        datasets[name] = {
            "faces": int((df["dataset"] == name).sum()),
            "photos": int(df.loc[df["dataset"] == name, "photo_id"].nunique()),
            "cropped": n,
            "detected": int(len(det)),
            "fallbacks": n - int(len(det)),
            "detection_rate": round(len(det) / n, 4) if n else None,
            "mean_iou": round(float(det["det_iou"].mean()), 4) if len(det) else None,
            "mean_score": round(float(det["det_score"].mean()), 4) if len(det) else None,
            "photos_unreadable": int(unreadable_photos[name]),
            "faces_skipped": int(sum(skipped[name].values())),
            "subsets": {
                str(s): {
                    "faces": int(len(g)),
                    "detection_rate": round(float((g["det_source"] == "mtcnn").mean()), 4),
                }
                for s, g in (sub.groupby("subset") if len(sub) else [])
            },
        }
    n = int(len(crops))
    return {
        "faces": int(len(df)),
        "cropped": n,
        "detected": int((crops["det_source"] == "mtcnn").sum()) if n else 0,
        "detection_rate": round(float((crops["det_source"] == "mtcnn").mean()), 4) if n else None,
        "datasets": datasets,
        "calibration": _calibration(crops),
        "wall_s": round(wall, 2),
        "detect_s": round(t_detect, 2),
        "faces_per_s": round(n / wall, 2) if wall > 0 else None,
        "device": device,
        "problems": problems,
    }


def _metrics(report: dict) -> dict[str, float]:
    """The report's numbers for MLflow: ``detection_rate``, ``300w/detection_rate``, ..."""
    out = {k: float(report[k]) for k in ("detection_rate", "wall_s", "detect_s", "faces_per_s") if report.get(k) is not None}
    for name, d in report["datasets"].items():
        for k in ("faces", "detected", "fallbacks", "detection_rate", "mean_iou", "photos_unreadable", "faces_skipped"):
            if d.get(k) is not None:
                out[f"{name}/{k}"] = float(d[k])
    return out


def main(params_path: str = "params.yaml") -> dict:
    """Run the ``crop`` stage with params from ``params_path`` (cwd = project root). Returns the report.

    With ``crop.cluster.backend: processes`` the photos are cropped in a pool of processes on this machine
    (:func:`facelandmarks.workers.process_pool`), with ``dask`` on a Dask cluster (:func:`dask_client`).
    Logs the report's numbers and ``reports/crop.json`` to an MLflow child run (``facelandmarks.mlflow_runs``).
    """
    from facelandmarks.mlflow_runs import stage_run

    params = load_params(params_path)
    cfg = section(params, "crop", CropParams, params_path)
    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    df = read_table(cfg.annotations)
    with stage_run("crop", params, run_name=f"crop MTCNN {cfg.size}px x{cfg.scale}"):
        import mlflow

        with atomic_dir(cfg.out_dir) as tmp, _client(cfg.cluster) as client:
            crops, report = crop_faces(df, cfg, tmp, crop_root=cfg.out_dir, client=client)
            if len(crops) == 0:
                raise ValueError(f"crop: no face of {cfg.annotations} could be cropped (see the problems in the report)")
            write_table(crops, cfg.table)
        write_json(cfg.report, report)
        mlflow.log_metrics(_metrics(report))
        mlflow.set_tag("device", report["device"])
        mlflow.log_artifact(cfg.report)
    for name, d in report["datasets"].items():
        rate = "n/a" if d["detection_rate"] is None else f"{d['detection_rate']:.1%}"
        print(
            f"{name}: {d['detected']}/{d['cropped']} faces detected by MTCNN ({rate}), "
            f"mean IoU {d['mean_iou']}, {d['fallbacks']} landmark-box fallbacks, "
            f"{d['photos_unreadable']} unreadable photos, {d['faces_skipped']} faces skipped"
        )
    c = report["cluster"]
    print(f"crop: {report['cropped']} faces in {report['wall_s']} s ({report['faces_per_s']} faces/s on {report['device']}, "
          f"{c['backend']}: {c['workers']} worker(s), {c['chunks']} chunks)")
    return report
