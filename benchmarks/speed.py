"""Speed: our landmark model and pipeline against dlib, on the same inputs, in one run.

* Landmark model per face: ``to_tensor`` + forward pass on real face crops (cut from the demo photos the way
  inference cuts them), at batch 1 and batch 32, after a warm-up; the median time of a call divided by the
  batch size. dlib's shape predictor has no batching: its figure is the median time of one face.
* End to end per frame: every frame of the demo video (640x360), ours = :class:`facelandmarks.FaceLandmarker`
  (MTCNN + crop + landmarks, one frame per call), dlib = HOG detector + shape predictor on the same frames.
  The median time per frame and the faces found per frame.

CPU figures run with ``torch.set_num_threads(threads)`` (2 by default: the project's reference machine);
dlib is single-threaded by design. On a machine with a GPU the same figures for ours are measured on CUDA
too (dlib-bin has no CUDA). The landmark model is also timed with ONNX Runtime on the CPU (the same network
exported by :func:`facelandmarks.inference.onnx_runtime.export_onnx`, ``threads`` calls at once, one thread each). Ratios are ours / dlib of medians from the same run (below 1 = ours faster).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from facelandmarks.baselines.dlib68 import DlibLandmarker
from facelandmarks.crop.faces import faces_from_detections
from facelandmarks.inference.landmarker import FaceLandmarker
from facelandmarks.io.images import read_image

__all__ = [
    "SpeedOptions",
    "time_calls",
    "demo_faces",
    "landmark_model_speed",
    "dlib_predictor_speed",
    "read_frames",
    "end_to_end_speed",
    "run_speed",
]

DEMO_IMAGES = Path("data/raw/demo/images")
DEMO_VIDEO = Path("data/raw/demo/video/face_recognition__short_hamilton_clip.mp4")


@dataclass
class SpeedOptions:
    """Settings of the speed benchmark.

    Attributes:
        threads: torch CPU threads.
        batch_sizes: landmark-model batch sizes.
        runs: timed calls per batch size (after ``warmup`` untimed ones); batch 1 gets ``runs * 5``.
        warmup: untimed calls first.
        dlib_runs: timed calls of dlib's predictor per face.
        video: the demo video.
        max_frames: frames of the video used (0 = all).
        frame_warmup: untimed frames first (model and MTCNN warm-up).
    """

    threads: int = 2
    batch_sizes: tuple[int, ...] = (1, 32)
    runs: int = 40
    warmup: int = 5
    dlib_runs: int = 200
    video: Path = DEMO_VIDEO
    max_frames: int = 0
    frame_warmup: int = 3


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 0, device: str = "cpu") -> np.ndarray:
    """Wall time of repeated calls.

    Args:
        fn: the call to time (no arguments).
        runs: timed calls.
        warmup: untimed calls first.
        device: ``cuda...`` synchronises the GPU after each call, so a call's time includes its kernels.
    Returns:
        ``(runs,) float64`` seconds per call.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    out = np.empty(runs, np.float64)
    for i in range(runs):
        t = time.perf_counter()
        fn()
        _sync(device)
        out[i] = time.perf_counter() - t
    return out


def _stats(seconds: np.ndarray, per: int = 1) -> dict:
    """Median and 90th percentile in milliseconds per item (``per`` items per call)."""
    s = np.asarray(seconds, dtype=np.float64) * 1000.0 / per
    return {"median_ms": float(np.median(s)), "p90_ms": float(np.percentile(s, 90)), "runs": int(len(s))}


def demo_faces(landmarker: FaceLandmarker, folder: Path = DEMO_IMAGES) -> tuple[list, np.ndarray]:
    """Real faces of the demo photos: the landmarker's MTCNN detections and its crops (its crop settings).

    Returns:
        ``(faces, crops)``: ``faces`` a list of ``(image (H, W, 3) uint8, box (4,) float32)`` per face,
        ``crops`` ``(N, S, S, 3) uint8`` cut as inference cuts them.
    Raises:
        FileNotFoundError: no demo photo or no face in them.
    """
    paths = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no demo photos (run `dvc pull`)")
    images = [read_image(p) for p in paths]
    faces, crops = [], []
    for img, det in zip(images, landmarker.detector.detect(images)):
        for f in faces_from_detections(img, det, landmarker.crop):
            faces.append((img, f.box))
            crops.append(f.crop)
    if not crops:
        raise FileNotFoundError(f"{folder}: MTCNN found no face in the demo photos")
    return faces, np.stack(crops)


def landmark_model_speed(
    predict_crops: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, device: str, options: SpeedOptions
) -> dict[str, dict]:
    """Per-face time of our landmark model at each batch size.

    The timed call is what inference does per batch (:meth:`FaceLandmarker.predict_crops`): ``to_tensor``
    (uint8 -> normalised float), copy to the device, forward pass, copy the landmarks back.

    Args:
        predict_crops: ``(B, S, S, 3) uint8`` crops -> ``(B, K, 2)`` landmarks, one forward pass per call
            (e.g. ``FaceLandmarker.predict_crops`` with ``batch_size`` at least the largest batch).
        crops: ``(N, S, S, 3) uint8`` real crops; batches repeat them cyclically.
        device: ``cpu`` or ``cuda`` (to synchronise the GPU around each call).
    Returns:
        ``{"batch_<B>": {"median_ms", "p90_ms", "runs", "batch"}}``, milliseconds PER FACE.
    """
    out = {}
    for b in options.batch_sizes:
        batch = np.ascontiguousarray(crops[np.arange(b) % len(crops)])

        def call(batch=batch):
            return predict_crops(batch)

        runs = options.runs * 5 if b == 1 else options.runs
        out[f"batch_{b}"] = {**_stats(time_calls(call, runs, options.warmup, device), per=b), "batch": b}
    return out


def dlib_predictor_speed(dlib: DlibLandmarker, faces: list, runs: int) -> dict:
    """Median time of dlib's shape predictor on one face (cycling over real faces).

    Args:
        dlib: the baseline.
        faces: ``(image, box)`` pairs (:func:`demo_faces`); boxes are given to dlib unchanged (speed does not
            depend on the box convention).
    Returns:
        ``{"median_ms", "p90_ms", "runs"}`` per face.
    """
    it = iter(range(10**12))

    def call():
        img, box = faces[next(it) % len(faces)]
        return dlib.landmarks(img, box[None])

    return _stats(time_calls(call, runs, warmup=5))


def read_frames(path: Path, max_frames: int = 0) -> list[np.ndarray]:
    """Decode a video's frames.

    Returns:
        list of ``(H, W, 3) uint8`` RGB frames (at most ``max_frames`` when > 0).
    Raises:
        FileNotFoundError: no such file, or OpenCV decodes no frame from it.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: video not found (run `dvc pull`)")
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while not max_frames or len(frames) < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise FileNotFoundError(f"{path}: no frame could be decoded")
    return frames


def end_to_end_speed(process: Callable[[np.ndarray], int], frames: list[np.ndarray], warmup: int, device: str = "cpu") -> dict:
    """Time a whole pipeline frame by frame.

    Args:
        process: frame -> number of faces it found.
        frames: ``(H, W, 3) uint8`` RGB frames.
        warmup: untimed frames first (the first frames, processed once more afterwards).
    Returns:
        ``{"median_ms", "p90_ms", "runs", "faces_per_frame", "frames_with_face", "frame_size"}``.
    """
    for f in frames[:warmup]:
        process(f)
    times, counts = [], []
    for f in frames:
        _sync(device)
        t = time.perf_counter()
        counts.append(process(f))
        _sync(device)
        times.append(time.perf_counter() - t)
    h, w = frames[0].shape[:2]
    return {
        **_stats(np.asarray(times)),
        "faces_per_frame": float(statistics.fmean(counts)),
        "frames_with_face": float(np.mean(np.asarray(counts) > 0)),
        "frame_size": f"{w}x{h}",
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return float(a / b) if a is not None and b else None


def run_speed(model_path: Path, devices: list[str], options: SpeedOptions | None = None) -> dict:
    """All speed figures.

    Args:
        model_path: our checkpoint.
        devices: ``["cpu"]`` or ``["cpu", "cuda"]`` (:func:`benchmarks.environment.speed_devices`).
        options: :class:`SpeedOptions`.
    Returns:
        ``{"threads", "dlib": {...}, "<device>": {"landmark_model": {...}, "end_to_end": {...}},
        "ratios": {...}, "seconds"}``; ratios are ours / dlib on the CPU.
    """
    opts = options or SpeedOptions()
    t0 = time.perf_counter()
    torch.set_num_threads(opts.threads)
    faces, crops = demo_faces(FaceLandmarker.load(model_path, device="cpu"))
    frames = read_frames(opts.video, opts.max_frames)
    dlib = DlibLandmarker()

    result: dict = {"threads": opts.threads, "demo_faces": len(faces), "frames": len(frames),
                    "video": Path(opts.video).name}
    result["dlib"] = {
        "landmarks_per_face": dlib_predictor_speed(dlib, faces, opts.dlib_runs),
        "end_to_end": end_to_end_speed(lambda f: len(dlib(f)[0]), frames, opts.frame_warmup),
        "device": "cpu (1 thread)",
        "hog_upsample": dlib.upsample,
    }
    for device in devices:
        ours = FaceLandmarker.load(model_path, device=device, batch_size=max(opts.batch_sizes))
        result[device] = {
            "landmark_model": landmark_model_speed(ours.predict_crops, crops, device, opts),
            "end_to_end": end_to_end_speed(lambda f, m=ours: len(m(f)), frames, opts.frame_warmup, device),
        }
        del ours
    onnx = FaceLandmarker.load(model_path, runtime="onnx", num_threads=opts.threads, batch_size=max(opts.batch_sizes))
    result["cpu_onnxruntime"] = {"landmark_model": landmark_model_speed(onnx.predict_crops, crops, "cpu", opts),
                                 "flip_test": bool(getattr(onnx.config, "flip_test", False))}
    del onnx
    # one pass per face (no flip test), as video mode runs it
    single = FaceLandmarker.load(model_path, device="cpu", batch_size=max(opts.batch_sizes)).variant(
        "onnx", flip_test=False, num_threads=opts.threads)
    result["cpu_onnxruntime_single_pass"] = {"landmark_model": landmark_model_speed(single.predict_crops, crops, "cpu", opts)}
    del single
    cpu, dl = result["cpu"], result["dlib"]
    result["ratios"] = {
        **{f"landmarks_{k}": _ratio(v["median_ms"], dl["landmarks_per_face"]["median_ms"])
           for k, v in cpu["landmark_model"].items()},
        **{f"landmarks_onnx_{k}": _ratio(v["median_ms"], dl["landmarks_per_face"]["median_ms"])
           for k, v in result["cpu_onnxruntime"]["landmark_model"].items()},
        "end_to_end": _ratio(cpu["end_to_end"]["median_ms"], dl["end_to_end"]["median_ms"]),
    }
    result["seconds"] = time.perf_counter() - t0
    return result
