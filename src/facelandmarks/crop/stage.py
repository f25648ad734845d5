"""The ``crop`` stage: annotation table -> square face crops + ``crops.parquet`` + ``reports/crop.json``.

For every distinct image file (AFW stores one byte-identical copy of a photo per face: those are
read and detected once; HELEN stores a different crop of the photo per face) MTCNN finds the
faces; each annotated face is matched to a detection by IoU with the box around its landmarks (:func:`facelandmarks.detect.matching.match_boxes`). A matched face is cut
from its MTCNN box, exactly as inference will cut it; a missed face falls back to an MTCNN-like box
derived from its landmarks (:func:`facelandmarks.crop.faces.fallback_box`). Misses and fallbacks are
counted per data set. Unreadable photos and unusable faces are reported and skipped, never fatal.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field
from tqdm import tqdm

from facelandmarks.crop.config import CropConfig, FallbackConfig
from facelandmarks.crop.faces import crop_face, fallback_box
from facelandmarks.crop.geometry import invert_affine, map_points
from facelandmarks.data.table import landmarks_bbox, read_table, write_table
from facelandmarks.detect.matching import match_boxes
from facelandmarks.detect.mtcnn import Detections, DetectorConfig, FaceDetector
from facelandmarks.fsutil import atomic_dir, write_json
from facelandmarks.io.images import ImageReadError, decode_image, write_image
from facelandmarks.params import load_params, section

__all__ = ["CropParams", "crop_faces", "main"]

log = logging.getLogger(__name__)


class CropParams(CropConfig):
    """The ``crop`` section of params.yaml: :class:`CropConfig` (what a model stores) plus the stage's knobs.

    Attributes:
        detector: MTCNN settings.
        match_iou: smallest IoU between an MTCNN box and the landmark box that counts as a detection.
        fallback: landmark box -> MTCNN-like box, for missed faces.
        num_threads: torch CPU threads (0 = torch's default).
        read_workers: threads decoding photos ahead of the detector.
        annotations, table, out_dir, report: input and output paths (relative to the project root).
    """

    detector: DetectorConfig = DetectorConfig()
    match_iou: float = Field(0.3, ge=0.0, le=1.0)
    fallback: FallbackConfig = FallbackConfig()
    num_threads: int = Field(0, ge=0)
    read_workers: int = Field(2, ge=1)
    annotations: str = "data/interim/annotations.parquet"
    table: str = "data/interim/crops.parquet"
    out_dir: str = "data/interim/crops"
    report: str = "reports/crop.json"

    def crop_config(self) -> CropConfig:
        """The geometry part, to store with a model (``.model_dump()``)."""
        return CropConfig(**{k: getattr(self, k) for k in CropConfig.model_fields})


def _read_photo(paths: list[str]) -> list[tuple[np.ndarray | None, str | None, list[str]]]:
    """Read the files of one photo, decoding byte-identical copies once.

    AFW stores one byte-identical copy of a photo per face; HELEN stores a different crop of the
    photo per face. Files are grouped by content hash.

    Returns:
        one ``(image, None, paths)`` per distinct readable content, one ``(None, error, [path])`` per
        unreadable file.
    """
    by_hash: dict[str, list[str]] = {}
    data: dict[str, bytes] = {}
    out: list[tuple[np.ndarray | None, str | None, list[str]]] = []
    for p in paths:
        try:
            raw = Path(p).read_bytes()
        except OSError as e:
            out.append((None, f"{p}: cannot be read ({e})", [p]))
            continue
        h = hashlib.sha1(raw).hexdigest()
        if h not in by_hash:
            by_hash[h] = []
            data[h] = raw
        by_hash[h].append(p)
    for h, ps in by_hash.items():
        try:
            if not data[h]:
                raise ImageReadError(f"{ps[0]}: empty file")
            out.append((decode_image(data[h], source=ps[0]), None, ps))
        except ImageReadError as e:
            out.append((None, str(e), ps))
    return out


def crop_faces(
    df: pd.DataFrame,
    params: CropParams,
    out_dir: str | Path,
    crop_root: str | Path | None = None,
    detector: FaceDetector | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Detect, match and crop every annotated face of a table.

    Args:
        df: annotation table (:mod:`facelandmarks.data.table`).
        params: stage settings.
        out_dir: folder the crop PNGs are written into (``<face_id>.png``).
        crop_root: folder recorded in ``crop_path`` (where ``out_dir`` will finally live, e.g. after an
            atomic rename); ``out_dir`` when None.
        detector: an existing detector (built from ``params.detector`` when None).
        progress: show a tqdm bar.
    Returns:
        ``(crops, report)``. ``crops`` holds the annotation row of every cropped face plus
        ``crop_path``, ``crop_landmarks (K, 2) float32`` (crop pixels), ``crop_to_photo (2, 3) float64``,
        ``det_source`` (``mtcnn``/``landmarks``), ``det_score`` and ``det_iou`` (NaN for fallbacks),
        ``det_box (4,) float32`` (the box the square was derived from: MTCNN's, or the fallback), and
        ``best_iou`` (the best IoU of the landmark box with any detection, 0 when none).
        ``report`` counts per data set: faces, photos, cropped, detected, fallbacks, detection_rate,
        mean_iou, mean_score, photos_unreadable (image files), faces_skipped, per-subset detection
        rates; overall: the fallback ``calibration`` measured on matched faces, images_decoded,
        wall_s, detect_s, faces_per_s, device, and the list of problems.
    """
    t0 = time.perf_counter()
    cfg = params.crop_config()
    out_dir = Path(out_dir)
    crop_root = Path(crop_root) if crop_root is not None else out_dir
    detector = detector or FaceDetector(params.detector)
    by_photo: dict[str, pd.DataFrame] = {pid: g for pid, g in df.groupby("photo_id", sort=False)}
    photos = list(by_photo)
    chunk = max(params.detector.batch_size * 4, 8)
    chunks = [photos[i : i + chunk] for i in range(0, len(photos), chunk)]

    rows: list[dict] = []
    problems: list[dict] = []
    t_detect = 0.0
    n_images = 0
    pool = ThreadPoolExecutor(max_workers=params.read_workers)

    def submit(ch: list[str]) -> list[Future]:
        return [pool.submit(_read_photo, list(dict.fromkeys(by_photo[p]["image_path"]))) for p in ch]

    bar = tqdm(total=len(df), desc="crop", unit="face", disable=not progress)
    try:
        pending = submit(chunks[0]) if chunks else []
        for ci, ch in enumerate(chunks):
            loaded = [f.result() for f in pending]
            pending = submit(chunks[ci + 1]) if ci + 1 < len(chunks) else []
            ok: list[tuple[np.ndarray, pd.DataFrame]] = []
            for p, files in zip(ch, loaded):
                g = by_photo[p]
                for img, err, paths in files:
                    faces = g[g["image_path"].isin(paths)]
                    n_images += 1
                    if img is None:
                        log.warning("crop: skipping %s (%d faces): %s", paths[0], len(faces), err)
                        problems.append({"photo_id": p, "dataset": g["dataset"].iloc[0], "faces": len(faces),
                                         "reason": "unreadable", "detail": err})
                        bar.update(len(faces))
                    else:
                        ok.append((img, faces))
            ts = time.perf_counter()
            dets = detector.detect([img for img, _ in ok]) if ok else []
            t_detect += time.perf_counter() - ts
            for (img, faces), det in zip(ok, dets):
                rows += _crop_photo(img, faces, det, params, cfg, out_dir, crop_root, problems)
                bar.update(len(faces))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    new = pd.DataFrame(rows, columns=_NEW_COLUMNS)
    crops = df.merge(new, on="face_id", how="inner", validate="one_to_one").reset_index(drop=True)
    wall = time.perf_counter() - t0
    report = _report(df, crops, problems, wall, t_detect, detector.device)
    report["images_decoded"] = n_images
    return crops, report


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

        with atomic_dir(cfg.out_dir) as tmp:
            crops, report = crop_faces(df, cfg, tmp, crop_root=cfg.out_dir)
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
    print(f"crop: {report['cropped']} faces in {report['wall_s']} s ({report['faces_per_s']} faces/s on {report['device']})")
    return report
