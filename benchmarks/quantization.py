"""The int8 landmark network against the float one: accuracy on every validation and test face, and speed.

The champion is quantised here, in a scratch folder, by the product's own code
(:func:`facelandmarks.inference.quantize.quantize_onnx`, calibrated on a fixed sample of training crops from
``data/interim/crops.parquet``), so the figures are of exactly the file ``facelandmarks export --quantize int8``
writes.

* Accuracy: the evaluation stage's ``crops`` protocol (:func:`facelandmarks.evaluate.protocols.predict_faces`:
  the box comes from the annotation, so detection plays no part) for the float champion (PyTorch, as the
  evaluate stage runs it) and the int8 file, on every face of the ``val`` and ``test`` splits of
  ``data/interim/annotations.parquet``. NME inter-ocular (outer eye corners; 300-W, Sagonas et al. IVC 2016)
  over visible points, mean over all faces of a set; failure rate at 0.08. The int8 settings were chosen on
  ``val``; ``test`` is reported.
* Speed: the landmark network per face on the demo photos' real crops (:func:`benchmarks.speed.landmark_model_speed`),
  float ONNX vs int8 ONNX (both ONNX Runtime, ``threads`` calls at once, the champion's flip test), and the int8
  network in one pass (no flip test: the network's own cost, what video mode runs; its accuracy is measured too),
  in alternating rounds so that all see the same machine load; the median over all rounds.

``python -m benchmarks.quantization`` runs it alone; ``python -m benchmarks.run`` runs it as the
``quantization`` section.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["QuantizationOptions", "nme_summary", "run_quantization", "markdown"]

SPLITS = ("val", "test")


@dataclass
class QuantizationOptions:
    """Settings of the int8 benchmark.

    Attributes:
        annotations: the annotation table (``download`` stage).
        crops_table: the crop stage's table (calibration crops: its ``train`` split).
        calibration_faces: calibration crops.
        threads: ONNX Runtime calls at once (one thread each).
        batch_sizes: timed batch sizes.
        rounds: alternating timing rounds (float, int8, float, int8, ...).
        runs: timed calls per batch size and round (batch 1: ``runs * 5``).
        max_faces: faces per data set and split (0 = all; small for a trial run).
        dlib_yardstick: also time dlib's shape predictor on the same faces in every round: the VM's speed changes
            from hour to hour (1.5-2x here), and dlib's figure, a fixed workload, lets runs be compared.
    """

    annotations: Path = Path("data/interim/annotations.parquet")
    crops_table: Path = Path("data/interim/crops.parquet")
    calibration_faces: int = 240
    threads: int = 2
    batch_sizes: tuple[int, ...] = (1, 32)
    rounds: int = 3
    runs: int = 20
    max_faces: int = 0
    dlib_yardstick: bool = True


def nme_summary(per_face: np.ndarray) -> dict:
    """``{"faces", "nme", "fr_08"}`` of per-face NME (fractions) over ALL faces of a set.

    Raises:
        ValueError: a NaN NME (a face without a prediction must not silently drop out of the mean).
    """
    from facelandmarks.metrics.ced import failure_rate

    e = np.asarray(per_face, dtype=np.float64)
    if np.isnan(e).any():
        raise ValueError(f"{int(np.isnan(e).sum())} faces have no NME")
    return {"faces": int(len(e)), "nme": float(e.mean()), "fr_08": failure_rate(e, 0.08)}


def _accuracy(faces: pd.DataFrame, landmarkers: dict, scheme) -> dict:
    """``{model: {dataset: {split: nme_summary}}}`` under the ``crops`` protocol, plus ``"agreement"``:
    ``{model: {dataset: {split: mean NME of its points against the first model's}}}`` for every model but the
    first (how far the int8 points are from the float ones, in inter-ocular distances)."""
    from facelandmarks.evaluate.protocols import ModelRun, predict_faces
    from facelandmarks.metrics.nme import nme, normaliser

    ids = set(faces["face_id"])
    runs = [ModelRun(name, lm, ids) for name, lm in landmarkers.items()]
    preds, problems = predict_faces(faces, runs, ["crops"], progress=False)
    if problems:
        raise RuntimeError(f"unreadable photos in the benchmark faces: {problems}")
    out: dict = {}
    first = next(iter(landmarkers))
    for (ds, split), g in faces.groupby(["dataset", "split"], sort=True):
        gt = np.stack(g["landmarks"].to_numpy()).astype(np.float64)
        norm = normaliser(gt, scheme)
        ref = np.stack([preds[(first, "crops")].landmarks[f] for f in g["face_id"]]).astype(np.float64)
        for name in landmarkers:
            pred = np.stack([preds[(name, "crops")].landmarks[f] for f in g["face_id"]]).astype(np.float64)
            per_face = nme(pred, gt, norm, np.stack(g["visible"].to_numpy()))
            out.setdefault(name, {}).setdefault(ds, {})[split] = nme_summary(per_face)
            if name != first:
                out.setdefault("agreement", {}).setdefault(name, {}).setdefault(ds, {})[split] = float(nme(pred, ref, norm).mean())
    return out


def run_quantization(model_path: Path, options: QuantizationOptions | None = None) -> dict:
    """Quantise the champion, then measure the float network, the int8 one and the int8 one without the flip test.

    Args:
        model_path: the champion's checkpoint.
        options: :class:`QuantizationOptions`.
    Returns:
        ``{"accuracy": {"float" | "int8" | "int8_one_pass": {dataset: {split: {"faces", "nme", "fr_08"}}},
        plus "agreement": {"int8" | "int8_one_pass": {dataset: {split: mean NME of its points against the float
        ones}}}}, "speed": {"onnx_float" | "onnx_int8" | "onnx_int8_one_pass": {"batch_<B>": {"median_ms",
        "round_medians_ms", "batch"}}},
        "dlib_yardstick": {"median_ms", "round_medians_ms"} (dlib's predictor per face, same rounds),
        "quantization": the file's settings, "file_mb", "demo_faces", "rounds", "threads", "flip_test", "seconds"}``.
    Raises:
        FileNotFoundError: a table or the checkpoint is missing.
    """
    from benchmarks.speed import SpeedOptions, demo_faces, dlib_predictor_speed, landmark_model_speed
    from facelandmarks.baselines.dlib68 import DlibLandmarker
    from facelandmarks.data.table import read_table
    from facelandmarks.inference.landmarker import FaceLandmarker
    from facelandmarks.inference.quantize import calibration_crops, quantize_onnx
    from facelandmarks.schemes import get_scheme

    opts = options or QuantizationOptions()
    t0 = time.perf_counter()
    ref = FaceLandmarker.load(model_path, device="cpu", batch_size=64)
    table = read_table(opts.annotations)
    faces = table[table["split"].isin(SPLITS)]
    if opts.max_faces:
        faces = faces.groupby(["dataset", "split"], group_keys=False).head(opts.max_faces)
    with tempfile.TemporaryDirectory(prefix="fl-int8-") as tmp:
        crops = calibration_crops(opts.crops_table, ref.config.input_size, opts.calibration_faces)
        path = quantize_onnx(model_path, Path(tmp) / "model.int8.onnx", crops)
        int8 = FaceLandmarker.load(path, runtime="onnx", num_threads=opts.threads, batch_size=64, detector=ref.detector)
        # the same int8 network without the flip test: one pass per face (what video mode runs), the network's own cost
        one = FaceLandmarker.load(quantize_onnx(model_path, Path(tmp) / "model.int8.one_pass.onnx", crops, flip_test=False),
                                  runtime="onnx", num_threads=opts.threads, batch_size=64, detector=ref.detector)
        quant = int8.model.quantization
        file_mb = path.stat().st_size / 1e6
        fl = ref.variant("onnx", num_threads=opts.threads)
        result: dict = {"accuracy": _accuracy(faces, {"float": ref, "int8": int8, "int8_one_pass": one},
                                              get_scheme(ref.config.scheme))}
        pairs, demo = demo_faces(ref)
        sp = SpeedOptions(threads=opts.threads, batch_sizes=opts.batch_sizes, runs=opts.runs, warmup=3)
        times: dict = {"onnx_float": {}, "onnx_int8": {}, "onnx_int8_one_pass": {}}
        dlib = DlibLandmarker() if opts.dlib_yardstick else None
        dlib_ms: list[float] = []
        for _ in range(opts.rounds):
            for name, lm in (("onnx_float", fl), ("onnx_int8", int8), ("onnx_int8_one_pass", one)):
                lm.batch_size = max(opts.batch_sizes)
                for key, v in landmark_model_speed(lm.predict_crops, demo, "cpu", sp).items():
                    times[name].setdefault(key, []).append(v)
            if dlib is not None:  # the yardstick: a fixed external workload timed in the same rounds
                dlib_ms.append(dlib_predictor_speed(dlib, pairs, opts.runs * 5)["median_ms"])
        result["speed"] = {name: {key: {"median_ms": float(np.median([r["median_ms"] for r in rs])),
                                        "round_medians_ms": [round(r["median_ms"], 3) for r in rs],
                                        "batch": rs[0]["batch"]}
                                  for key, rs in per.items()} for name, per in times.items()}
    if dlib_ms:
        result["dlib_yardstick"] = {"median_ms": float(np.median(dlib_ms)), "round_medians_ms": [round(v, 3) for v in dlib_ms]}
    result.update({"quantization": quant, "file_mb": file_mb, "demo_faces": int(len(demo)), "rounds": opts.rounds, "threads": opts.threads,
                   "flip_test": bool(ref.config.flip_test), "seconds": time.perf_counter() - t0})
    return result


def _yardstick(q: dict) -> str:
    """The sentence on dlib's predictor timed in the same rounds (empty when it was not)."""
    y = q.get("dlib_yardstick") or {}
    if not y.get("median_ms"):
        return ""
    return (f"; in the same rounds dlib's shape predictor took {y['median_ms']:.2f} ms per face (the VM's speed of the "
            "hour: compare runs by it)")


def markdown(q: dict) -> str:
    """The section's tables: NME per data set and split (float vs int8), then speed per face."""
    from benchmarks.report import DATASET_NAMES, _ms, _pct, _table

    rows = []
    acc = q.get("accuracy") or {}
    agree = acc.get("agreement") or {}
    for ds in sorted(acc.get("float") or {}):
        for split in SPLITS:
            f, i, o = (acc.get(m, {}).get(ds, {}).get(split) or {} for m in ("float", "int8", "int8_one_pass"))
            if f:
                rows.append([DATASET_NAMES.get(ds, ds), split, str(f.get("faces")), _pct(f.get("nme")), _pct(i.get("nme")),
                             _pct(o.get("nme")), _pct(f.get("fr_08")), _pct(i.get("fr_08")),
                             _pct(agree.get("int8", {}).get(ds, {}).get(split))])
    parts = [_table(["data set", "split", "faces", "NME float", "NME int8", "NME int8 one pass", "FR@0.08 float",
                     "FR@0.08 int8", "int8 vs float points"], rows)]
    srows = []
    speed = q.get("speed") or {}
    for key in sorted(speed.get("onnx_float") or {}, key=lambda k: int(k.split("_")[1])):
        f, i = speed["onnx_float"][key], (speed.get("onnx_int8") or {}).get(key) or {}
        o = (speed.get("onnx_int8_one_pass") or {}).get(key) or {}
        srows.append([f"batch {f['batch']}", _ms(f["median_ms"]), _ms(i.get("median_ms")),
                      f"{f['median_ms'] / i['median_ms']:.2f}x" if i.get("median_ms") else "n/a", _ms(o.get("median_ms"))])
    parts.append(_table(["landmark network per face (ONNX Runtime, "
                         f"{q.get('threads')} threads, flip test {'on' if q.get('flip_test') else 'off'})",
                         "float", "int8", "speed-up", "int8, one pass (no flip test)"], srows))
    parts.append("Crops protocol (box from the annotation), flip test (\"one pass\": without it), every face of each "
                 "split; \"int8 vs float points\": the int8 points' mean distance from the float points, in inter-ocular "
                 "distances. "
                 f"Speed: {q.get('demo_faces')} real crops of the demo photos, median of "
                 f"{q.get('rounds')} alternating rounds{_yardstick(q)}. File: {q.get('file_mb', 0):.1f} MB; settings: "
                 f"`{json.dumps(q.get('quantization'), sort_keys=True)}`.")
    return "\n\n".join(parts)


def main() -> None:
    """Run it alone on the champion checkpoint; print the tables and write ``benchmarks/out/quantization.json``."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    res = run_quantization(Path("models/finetune/model.pt"))
    out = Path("benchmarks/out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "quantization.json").write_text(json.dumps(res, indent=2))
    print(markdown(res))


if __name__ == "__main__":
    main()
