"""The serving detection size: what downscaling photos for MTCNN saves in time and costs in accuracy.

For each longer side in ``sides`` (0: the model's stored ``crop.detector.max_side``), the champion is loaded
as the service loads it (``serve.detect_min_score``, that detection size) and run end to end through the
evaluation stage's own code (:func:`facelandmarks.evaluate.protocols.predict_faces` +
:func:`facelandmarks.evaluate.summary.face_errors` / ``group_metrics``) on the TEST split of each data set:
every annotated face counts (a missed face is a failure at every threshold; its NME comes from its
landmark-derived fallback box), and the detection rate is the fraction of faces a detection matches (IoU >=
``evaluate.match_iou`` with the landmark box). Time: MTCNN per photo (median over the photos, one torch
thread, ``time.perf_counter`` around :meth:`FaceDetector.detect`), on the same photos.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facelandmarks.data.table import read_table
from facelandmarks.evaluate.protocols import ModelRun, predict_faces
from facelandmarks.evaluate.summary import face_errors, group_metrics
from facelandmarks.inference.landmarker import FaceLandmarker
from facelandmarks.io.photos import iter_photo_images
from facelandmarks.schemes import get_scheme

__all__ = ["run_detect_size", "markdown"]


def _detect_ms(landmarker: FaceLandmarker, faces: pd.DataFrame, max_photos: int) -> float:
    """Median MTCNN milliseconds per photo over at most ``max_photos`` photos of ``faces``."""
    times = []
    for i, photo in enumerate(iter_photo_images(faces.sort_values("photo_id", kind="stable"), workers=1)):
        if i >= max_photos:
            break
        if photo.image is None:
            continue
        t = time.perf_counter()
        landmarker.detector.detect([photo.image])
        times.append(1000.0 * (time.perf_counter() - t))
    return statistics.median(times) if times else float("nan")


def run_detect_size(model: str | Path, annotations: Path, sides: tuple[int, ...] = (0, 640, 480),
                    datasets: tuple[str, ...] = ("300w", "infanface"), split: str = "test", min_score: float = 0.9,
                    match_iou: float = 0.3, threads: int = 1, timed_photos: int = 40,
                    rotate_angles: tuple[float, ...] | None = None) -> dict:
    """Detection rate, NME over all faces and MTCNN time per photo at each serving detection size.

    ``min_score`` and ``rotate_angles`` are the service's (``serve.detect_min_score``, ``serve.detect_rotate_angles``;
    None: the model's stored angles).

    Returns:
        ``{"rows": [{"max_side", "dataset", "faces", "detected", "nme_inter_ocular", "nme_inter_ocular_detected",
        "failure_rate_08", "detect_ms_per_photo"}], "split", "min_score", "threads"}``.
    """
    torch.set_num_threads(threads)
    table = read_table(annotations)
    scheme = get_scheme("ibug68")
    rows = []
    for side in sides:
        lm = FaceLandmarker.load(model, device="cpu", min_score=min_score, detect_max_side=side or None,
                                 rotate_angles=rotate_angles)
        for ds in datasets:
            faces = table[(table["dataset"] == ds) & (table["split"] == split)]
            if faces.empty:
                continue
            ids = set(faces["face_id"])
            preds, _ = predict_faces(faces, [ModelRun("m", lm, ids)], ["end_to_end"], match_iou, progress=False)
            errors = face_errors(faces, preds[("m", "end_to_end")], scheme, ["inter_ocular"], ids)
            m = group_metrics(errors, ["inter_ocular"], "inter_ocular", [0.08], end_to_end=True)
            rows.append({"max_side": int(lm.detector.config.max_side), "dataset": ds, "faces": m["faces"],
                         "detected": m["detected"], "nme_inter_ocular": m["nme_inter_ocular"],
                         "nme_inter_ocular_detected": m["nme_inter_ocular_detected"],
                         "failure_rate_08": m.get("failure_rate_08"),
                         "detect_ms_per_photo": round(_detect_ms(lm, faces, timed_photos), 1)})
    return {"rows": rows, "split": split, "min_score": min_score, "threads": threads}


def markdown(result: dict) -> str:
    """The README / results table."""
    lines = [f"| MTCNN longer side | data set ({result['split']}) | faces | detected | NME all faces | "
             "NME detected faces | FR@0.08 | MTCNN ms / photo |", "|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}%"  # noqa: E731
    for r in result["rows"]:
        lines.append(f"| {r['max_side']} | {r['dataset']} | {r['faces']} | {pct(r['detected'])} | "
                     f"{pct(r['nme_inter_ocular'])} | {pct(r['nme_inter_ocular_detected'])} | "
                     f"{pct(r['failure_rate_08'])} | {r['detect_ms_per_photo']} |")
    return "\n".join(lines) + "\n"
