"""The ``augment`` stage: training crops -> landmark-aware variants + ``augmented.parquet`` + a preview.

Only ``split == "train"`` faces are augmented; validation and test faces never are. Every training
face gets variant 0 (its crop, unchanged) and ``variants`` augmented variants; variant ``v`` of face
``f`` is drawn from the seed :func:`~facelandmarks.augment.transforms.variant_seed` ``(seed, f, v)``, so
the output does not depend on processing order and repeats exactly for a seed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from facelandmarks.augment.config import AugmentParams
from facelandmarks.augment.preview import plot_augment_preview
from facelandmarks.augment.transforms import augment_face, build_transforms, compose, variant_seed
from facelandmarks.data.table import read_table, write_table
from facelandmarks.fsutil import atomic_dir, write_json
from facelandmarks.io.images import ImageReadError, read_image, write_image
from facelandmarks.params import load_params, section
from facelandmarks.schemes import get_scheme

__all__ = ["AUGMENTED_COLUMNS", "augment_table", "main"]

log = logging.getLogger(__name__)

AUGMENTED_COLUMNS = [
    "face_id", "dataset", "subset", "split", "variant", "image_path", "landmarks", "visible", "scheme", "flipped",
]


def augment_table(
    crops: pd.DataFrame,
    params: AugmentParams,
    seed: int,
    out_dir: str | Path,
    out_root: str | Path | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Write variant 0 and ``params.variants`` augmented variants of every training crop.

    Args:
        crops: the ``crop`` stage's table (``crop_path``, ``crop_landmarks``, ``visible``, ``split``, ...).
        params: augment settings.
        seed: the project seed.
        out_dir: folder the PNGs are written into (``<face_id>_v<variant>.png``).
        out_root: folder recorded in ``image_path`` (where ``out_dir`` finally lives); ``out_dir`` when None.
        progress: show a tqdm bar.
    Returns:
        ``(table, report)``: one row per variant with :data:`AUGMENTED_COLUMNS` (``landmarks (K, 2)
        float32`` crop pixels; ``visible (K,) bool``, False for points outside the crop; ``flipped``
        whether the variant was mirrored), and counts (faces, rows, faces skipped for an unreadable
        crop, points pushed outside their crop, flips, wall time, images per second).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_root = Path(out_root) if out_root is not None else out_dir
    train = crops[crops["split"] == "train"]
    pipeline = compose(build_transforms(params))
    rows, problems = [], []
    n_hidden = 0
    for _, face in tqdm(train.iterrows(), total=len(train), desc="augment", unit="face", disable=not progress):
        try:
            crop = read_image(face["crop_path"])
        except ImageReadError as e:
            log.warning("augment: skipping face %s: %s", face["face_id"], e)
            problems.append({"face_id": face["face_id"], "reason": "unreadable", "detail": str(e)})
            continue
        scheme = get_scheme(face["scheme"])
        pts = np.asarray(face["crop_landmarks"], dtype=np.float32)
        vis0 = np.asarray(face["visible"], dtype=bool)
        s = crop.shape[0]
        inside = np.all((pts >= -0.5) & (pts <= s - 0.5), axis=1)
        for v in range(params.variants + 1):
            if v == 0:
                img, kp, vis, flipped = crop, pts, vis0 & inside, False
            else:
                img, kp, vis, flipped = augment_face(pipeline, crop, pts, vis0, scheme, variant_seed(seed, face["face_id"], v))
                n_hidden += int((vis0 & ~vis).sum())
            rel = Path(f"{face['face_id']}_v{v}.png")
            write_image(out_dir / rel, img)
            rows.append(
                {
                    "face_id": face["face_id"],
                    "dataset": face["dataset"],
                    "subset": face["subset"],
                    "split": "train",
                    "variant": v,
                    "image_path": str(out_root / rel),
                    "landmarks": kp.astype(np.float32),
                    "visible": vis.astype(bool),
                    "scheme": face["scheme"],
                    "flipped": bool(flipped),
                }
            )
    table = pd.DataFrame(rows, columns=AUGMENTED_COLUMNS)
    wall = time.perf_counter() - t0
    report = {
        "faces": int(train["face_id"].nunique()),
        "faces_augmented": int(table["face_id"].nunique()) if len(table) else 0,
        "rows": int(len(table)),
        "variants_per_face": params.variants + 1,
        "faces_skipped": len(problems),
        "points_pushed_outside": n_hidden,
        "flipped": int(table["flipped"].sum()) if len(table) else 0,
        "wall_s": round(wall, 2),
        "images_per_s": round(len(table) / wall, 1) if wall > 0 else None,
        "problems": problems,
    }
    return table, report


def main(params_path: str = "params.yaml") -> dict:
    """Run the ``augment`` stage with params from ``params_path`` (cwd = project root). Returns the report.

    Logs the counts, ``reports/augment.json`` and the preview to an MLflow child run (``facelandmarks.mlflow_runs``).
    """
    from facelandmarks.mlflow_runs import stage_run

    params = load_params(params_path)
    cfg = section(params, "augment", AugmentParams, params_path)
    seed = int(params.get("seed", 0))
    crops = read_table(cfg.crops)
    with stage_run("augment", params, run_name=f"augment {cfg.variants} variants per training face"):
        import mlflow

        with atomic_dir(cfg.out_dir) as tmp:
            table, report = augment_table(crops, cfg, seed, tmp, out_root=cfg.out_dir)
            if len(table) == 0:
                raise ValueError(f"augment: no training face in {cfg.crops} could be augmented")
            write_table(table, cfg.table)
            # the preview reads the images from the temporary folder, before the rename
            in_tmp = [str(Path(tmp) / Path(p).relative_to(cfg.out_dir)) for p in table["image_path"]]
            plot_augment_preview(table.assign(image_path=in_tmp), cfg.preview.out, cfg.preview.faces, seed=seed)
        write_json(cfg.report, report)
        mlflow.log_metrics({k: float(v) for k, v in report.items() if isinstance(v, (int, float)) and v is not None})
        mlflow.log_artifact(cfg.report)
        mlflow.log_artifact(cfg.preview.out, "figures")
    print(
        f"augment: {report['faces_augmented']} training faces x {report['variants_per_face']} variants = "
        f"{report['rows']} images in {report['wall_s']} s; {report['faces_skipped']} skipped, "
        f"{report['points_pushed_outside']} points pushed outside their crop"
    )
    return report
