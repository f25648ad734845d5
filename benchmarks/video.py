"""Video benchmark: face tracking (:class:`facelandmarks.video.VideoLandmarker`) against per-frame detection.

``python -m benchmarks.video [--model PATH] [--threads 1]`` measures, on the two demo videos:

* **speed** (speaker clip, 640x360, one speaker): frames per second end to end (decoding the file with
  OpenCV, MTCNN, crops, landmark network, smoothing) with tracking, with MTCNN on every frame
  (:class:`facelandmarks.FaceLandmarker` per frame), and dlib's HOG detector + shape predictor; the tracker
  with a fixed detector interval (no back-off, no O-net check) and with the int8 network in one pass run in
  the same alternating rounds (medians reported);
* **jitter** (speaker clip): mean frame-to-frame landmark displacement of one face, divided by its
  inter-ocular distance (outer eye corners 36/45 of the iBUG 68 scheme, 300-W's normaliser), for per-frame
  detection, tracking without smoothing and tracking with the One Euro filter; and the **lag** the
  smoothing adds, in frames: the shift that best aligns the smoothed landmarks with a zero-phase
  (centred, so delay-free) moving average of the network's points before smoothing, in the same run;
  a sweep of One Euro settings, one tracking run each, shows the jitter / lag trade-off. The speaker moves
  (sings, turns), so most of that clip's frame-to-frame move is motion, not jitter; the **still face**
  (:func:`still_clip`: a real photo of the same speaker repeated with camera noise and video compression)
  is the known-answer case: nothing moves, so all of its measured move is jitter;
* **coverage** (street clip, 1920x1080, several walkers): faces per frame with tracking vs MTCNN on every
  frame, and the share of per-frame detections that a track covers (IoU >= 0.3 with a tracked box).

Targets (issue 13): >= 60 fps with one face at 640x360 (the speaker shot, frames 82-210: the clip's one-face part;
the whole clip, with cuts and up to 4 faces, is reported beside it); jitter <= half of per-frame detection with <= 1
frame of lag; >= 95 % of per-frame detections tracked. Results go to ``benchmarks/video_results.json``
and ``benchmarks/video_results.md``.

Model: ``--model`` (a checkpoint or MLflow URI); by default the champion or ``models/finetune/model.pt``
(as ``benchmarks.run``). When neither exists, ``--stand-in`` trains a stand-in network of the default
architecture (params.yaml ``model``) for ``--stand-in-seconds`` on 300-W faces: speed does not depend on
the weights, but jitter and coverage do, and such a model is far less accurate than a trained one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
import typer

from facelandmarks.quiet import QUIET_ENV

__all__ = ["VideoBenchOptions", "coverage", "jitter", "run_video", "smoothing_lag", "stand_in_checkpoint"]

SPEAKER = Path("data/raw/demo/video/face_recognition__short_hamilton_clip.mp4")
STREET = Path("data/raw/demo/video/facenet_pytorch__video.mp4")
#: the still face: a real photo of the speaker of the speaker clip, made into a clip by :func:`still_clip`
STILL_PHOTO = Path("data/raw/demo/images/face_recognition__lin-manuel-miranda.png")
log = logging.getLogger("benchmarks.video")
app = typer.Typer(add_completion=False, help=__doc__)


@dataclass
class VideoBenchOptions:
    """Settings of the video benchmark.

    Attributes:
        threads: torch CPU threads.
        max_frames: frames of each clip used (0 = all).
        warmup: frames processed untimed before each timed pass.
        dlib: also time dlib's HOG + shape predictor end to end.
        rounds: alternating timing rounds of tracking, tracking with a fixed detector interval, and the speaker
            shot (medians reported).
        still_noise: camera noise of the still-face clip (:func:`still_clip`), std in grey levels.
        crops_table: the crop stage's table, to calibrate the int8 one-pass network the video mode can run
            (``facelandmarks export --no-flip-test --quantize int8``); that network is skipped when it is absent.
    """

    threads: int = 1
    max_frames: int = 0
    warmup: int = 10
    dlib: bool = True
    rounds: int = 3
    crops_table: str = "data/interim/crops.parquet"
    still_noise: float = 3.0


# -- a stand-in model when no trained one exists -------------------------------------------------------


def stand_in_checkpoint(out: Path, seconds: float | None = 60.0, faces: int = 600, seed: int = 0, epochs: int = 100,
                        model: dict[str, Any] | None = None, input_size: int | None = None) -> Path:
    """Train a stand-in landmark network of the default architecture for about ``seconds``.

    The network is params.yaml's ``model`` (backbone, its initial weights, head, flip test) at the ``crop``
    size; the faces are
    300-W HELEN/AFW photos cut as evaluation's ``crops`` protocol cuts them (the landmark box turned into
    an MTCNN-like box with ``crop.fallback``, then the model's crop settings), with the project's online
    augmentation. Only for benchmarks on a machine without a trained model, and for the tracking tests
    (a small network for a fixed number of epochs, so that the result does not depend on the machine).

    Args:
        out: folder of the checkpoint.
        seconds: training time cap (None: ``epochs`` decide alone).
        faces: 300-W faces used (32 of them for validation), a seeded choice.
        seed: faces, weights and augmentation.
        epochs: epochs at most.
        model: overrides of params.yaml ``model`` (e.g. ``{"backbone": "mobilenetv3_small_050"}``).
        input_size: crop size (default: params.yaml ``crop.size``).
    Returns:
        the checkpoint path ``out / "model.pt"``.
    """
    import torch

    from facelandmarks.crop.config import CropConfig, FallbackConfig
    from facelandmarks.crop.faces import crop_face, fallback_box
    from facelandmarks.crop.geometry import invert_affine, map_points
    from facelandmarks.io.images import read_image
    from facelandmarks.io.pts import read_pts
    from facelandmarks.model.config import ModelConfig
    from facelandmarks.model.network import build_model
    from facelandmarks.params import load_params
    from facelandmarks.schemes import get_scheme
    from facelandmarks.train.dataset import FaceDataset, CropSet, OnlineAugment
    from facelandmarks.train.loop import FitOptions, fit

    params = load_params("params.yaml")
    crop = dict(params["crop"])
    if input_size:
        crop["size"] = int(input_size)
    geometry = CropConfig.model_validate({k: v for k, v in crop.items() if k in CropConfig.model_fields})
    fb = FallbackConfig.model_validate(crop.get("fallback") or {})
    paths = sorted(Path("data/raw/300w").rglob("*.pts"))
    rng = np.random.default_rng(seed)
    paths = [paths[i] for i in sorted(rng.choice(len(paths), size=min(faces, len(paths)), replace=False))]
    images, points = [], []
    for p in paths:
        photo = next((p.with_suffix(s) for s in (".jpg", ".png") if p.with_suffix(s).is_file()), None)
        if photo is None:
            continue
        pts = read_pts(p)
        c, c2p = crop_face(read_image(photo), fallback_box(pts, fb), geometry)
        images.append(c)
        points.append(map_points(pts, invert_affine(c2p)).astype(np.float32))
    lms = np.stack(points)
    all_faces = CropSet(np.stack(images), lms, np.ones(lms.shape[:2], bool), np.arange(len(lms)).astype(str))
    val = all_faces.subset(slice(0, 32))
    train = all_faces.subset(slice(32, None))
    cfg = ModelConfig(**{**params["model"], **(model or {})}, num_points=68, scheme="ibug68",
                      input_size=geometry.size, crop=crop)
    torch.manual_seed(seed)
    model = build_model(cfg)
    out.mkdir(parents=True, exist_ok=True)
    aug = OnlineAugment(**(params.get("train", {}).get("online_augment") or {}))
    fit(model, FaceDataset(train, get_scheme("ibug68"), aug, seed=seed), val,
        [{"params": list(model.parameters()), "lr": 3e-3}],
        FitOptions(epochs=epochs, batch_size=32, warmup_epochs=0.2, device="cpu", progress=False, resume=False,
                   patience=0, max_minutes=None if seconds is None else seconds / 60.0, seed=seed),
        out / "model.pt", out / "last.pt", meta={"stage": "benchmark stand-in", "seconds": seconds})
    return out / "model.pt"


# -- measures -------------------------------------------------------------------------------------------


def _iod(landmarks: np.ndarray) -> np.ndarray:
    """Inter-ocular distance (outer eye corners 36 and 45 of iBUG 68) of ``(..., 68, 2)`` points."""
    from facelandmarks.schemes import get_scheme

    r, l = get_scheme("ibug68").outer_eye_corners
    return np.linalg.norm(landmarks[..., r, :] - landmarks[..., l, :], axis=-1)


def jitter(sequences: list[np.ndarray]) -> dict[str, float]:
    """Mean frame-to-frame displacement of the landmarks, in inter-ocular distances.

    Args:
        sequences: per face identity, ``(T, K, 2)`` landmarks in consecutive frames.
    Returns:
        ``{"mean": mean over consecutive pairs of the mean point displacement / inter-ocular distance,
        "median": its median, "pairs": number of pairs}``.
    """
    values = []
    for seq in sequences:
        if len(seq) < 2:
            continue
        d = np.linalg.norm(seq[1:] - seq[:-1], axis=-1).mean(axis=-1)
        iod = (_iod(seq[1:]) + _iod(seq[:-1])) / 2.0
        ok = iod > 1.0
        values.append(d[ok] / iod[ok])
    v = np.concatenate(values) if values else np.zeros(0)
    return {"mean": float(v.mean()) if len(v) else float("nan"), "median": float(np.median(v)) if len(v) else float("nan"),
            "pairs": len(v)}


def smoothing_lag(raw: np.ndarray, smoothed: np.ndarray, window: int = 5, max_lag: float = 5.0) -> float:
    """Delay of the smoothed landmarks in frames.

    The reference is a centred moving average of the raw landmarks over ``window`` frames (zero phase:
    no delay, little noise); the lag is the shift ``d`` (0 .. ``max_lag`` in steps of 0.05 frame, linear
    interpolation) minimising the mean distance between ``smoothed(t)`` and ``reference(t - d)``.

    Args:
        raw, smoothed: ``(T, K, 2)`` landmarks of one face in consecutive frames.
    Returns:
        the lag in frames (NaN when the sequence is too short).
    """
    T = len(raw)
    if T < 4 * window:
        return float("nan")
    kernel = np.ones(window) / window
    flat = raw.reshape(T, -1)
    ref = np.stack([np.convolve(flat[:, j], kernel, mode="same") for j in range(flat.shape[1])], axis=1)
    h = window // 2 + int(np.ceil(max_lag)) + 1
    t = np.arange(h, T - window // 2)
    best, best_d = np.inf, 0.0
    for d in np.arange(0.0, max_lag + 1e-9, 0.05):
        x = t - d
        i0 = np.floor(x).astype(int)
        f = (x - i0)[:, None]
        shifted = ref[i0] * (1 - f) + ref[i0 + 1] * f
        err = np.linalg.norm((smoothed.reshape(T, -1)[t] - shifted).reshape(len(t), -1, 2), axis=-1).mean()
        if err < best:
            best, best_d = err, float(d)
    return best_d


def coverage(tracked: list[np.ndarray], detected: list[np.ndarray], min_iou: float = 0.3) -> dict[str, float]:
    """How many per-frame detections a track covers.

    Args:
        tracked: per frame, ``(n, 4)`` tracked boxes.
        detected: per frame, ``(m, 4)`` boxes of MTCNN on that frame.
    Returns:
        ``{"covered": share of detections with a tracked box at IoU >= min_iou (one-to-one),
        "tracked_per_frame", "detected_per_frame"}``.
    """
    from facelandmarks.detect.matching import match_boxes

    hit = total = 0
    for t, d in zip(tracked, detected):
        idx, _ = match_boxes(t, d, min_iou)
        hit += int((idx >= 0).sum())
        total += len(d)
    return {"covered": hit / total if total else float("nan"),
            "tracked_per_frame": float(np.mean([len(t) for t in tracked])),
            "detected_per_frame": float(np.mean([len(d) for d in detected]))}


def smoothing_sweep(landmarker: Any, params: Any, frames: list[tuple[int, float, np.ndarray]], fps: float,
                    baseline: float, min_cutoffs: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0),
                    betas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)) -> list[dict]:
    """Jitter and lag of One Euro settings, each from its own tracking run: the tracker predicts the next crop
    from the smoothed points' move, so smoothing changes the crops and the network's own points too (applying
    the filters to one unsmoothed run's points would measure another tracker).

    Args:
        landmarker: the :class:`facelandmarks.inference.landmarker.FaceLandmarker`.
        params: the video params (:class:`facelandmarks.video.VideoParams`); only the smoothing settings vary.
        frames: ``(index, time, frame)`` of the clip, ``(H, W, 3) uint8`` RGB.
        fps: frame rate in Hz.
        baseline: jitter of per-frame detection (the ratio's denominator).
    Returns:
        one ``{"min_cutoff", "beta", "jitter", "ratio", "lag_frames"}`` per setting; the jitter is that of the
        largest face's smoothed points (:func:`jitter`), the lag the median over its sequences of
        :func:`smoothing_lag` against the same run's unsmoothed points.
    """
    from facelandmarks.video import VideoLandmarker

    rows = []
    for mc in min_cutoffs:
        for beta in betas:
            smoothing = params.smoothing.model_copy(update={"enabled": True, "min_cutoff": mc, "beta": beta})
            video = VideoLandmarker(landmarker, params.model_copy(update={"smoothing": smoothing}), fps=fps)
            smoothed, lag = _smoothed_and_lag([video.step(f, t, k) for k, t, f in frames])
            j = jitter(smoothed)["mean"]
            rows.append({"min_cutoff": mc, "beta": beta, "jitter": j, "ratio": j / baseline, "lag_frames": lag})
    return rows


def _smoothed_and_lag(results: list[Any]) -> tuple[list[np.ndarray], float]:
    """The largest face's smoothed ``(T, K, 2)`` sequences of a tracking run, and the median over them of
    :func:`smoothing_lag` against the same run's unsmoothed points (frames; NaN when no sequence is long enough)."""
    smoothed = _largest_sequences([r.faces for r in results])
    raw = _largest_sequences([r.faces for r in results], "raw")
    lags = [x for x in (smoothing_lag(b, s) for b, s in zip(raw, smoothed)) if np.isfinite(x)]
    return smoothed, float(np.median(lags)) if lags else float("nan")


def _frames(path: Path, max_frames: int = 0):
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"{path}: not a readable video (run `dvc pull`)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
    try:
        k = 0
        while not max_frames or k < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            yield k, k / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            k += 1
    finally:
        cap.release()


def _fps_of(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
    cap.release()
    return fps


def still_clip(photo: Path, out: Path, frames: int = 90, fps: float = 30.0, size: tuple[int, int] = (640, 360),
               noise: float = 2.0, seed: int = 0) -> Path:
    """A still face as a video file: nothing in it moves, so every frame-to-frame landmark move measured on it is
    jitter (the known answer of the jitter measure: a perfect tracker scores 0 here).

    The photo is shrunk to fit a ``size`` frame (aspect kept, centred, black around it) and written ``frames``
    times, each with fresh Gaussian sensor noise (std ``noise`` grey levels, ``seed``), MPEG-4 encoded (OpenCV's
    ``mp4v``), so the frames differ as a camera's do (noise and compression), not in content.

    Args:
        photo: a photo with one face (read with :func:`facelandmarks.io.images.read_image`).
        out: the ``.mp4`` to write.
        frames: frame count; fps: frame rate in Hz; size: ``(width, height)`` pixels.
    Returns:
        ``out``.
    Raises:
        facelandmarks.io.images.ImageReadError: the photo cannot be read.
        RuntimeError: OpenCV cannot write the video (the message names the file).
    """
    from facelandmarks.io.images import read_image

    img = read_image(photo)
    w, h = size
    k = min(w / img.shape[1], h / img.shape[0])
    small = cv2.resize(img, (round(img.shape[1] * k), round(img.shape[0] * k)), interpolation=cv2.INTER_AREA)
    frame = np.zeros((h, w, 3), np.uint8)
    y0, x0 = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    frame[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR).astype(np.float32)
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"{out}: OpenCV cannot write an mp4v video here")
    try:
        for _ in range(frames):
            writer.write(np.clip(bgr + rng.normal(0.0, noise, bgr.shape), 0, 255).round().astype(np.uint8))
    finally:
        writer.release()
    return out


def _timed(path: Path, process, max_frames: int, warmup: int, start: int = 0) -> tuple[float, list[Any]]:
    """Frames per second of ``process(index, time, frame)`` over a video (frames ``start`` .. ``max_frames - 1``),
    decoding included (frames before ``start`` are decoded untimed)."""
    for k, t, f in _frames(path, warmup):
        process(k, t, f)
    outputs = []
    frames = _frames(path, max_frames)
    if start > 0:
        for k, _, _ in frames:
            if k + 1 >= start:
                break
    t0 = time.perf_counter()
    for k, t, f in frames:
        outputs.append(process(k - start, t, f))
    wall = time.perf_counter() - t0
    return len(outputs) / wall, outputs


def _largest_sequences(faces_per_frame: list[list[Any]], attr: str = "landmarks") -> list[np.ndarray]:
    """The largest face of each frame, as sequences of ``(T, K, 2)`` points (``attr`` of the face).

    Jitter is compared on the same face whatever the method: per frame the largest box; a sequence ends
    where a frame has no face or the largest face is another one (another track id, or for per-frame
    detection, which has no ids, a box overlapping the previous one at IoU < 0.3).
    """
    from facelandmarks.detect.matching import box_iou

    seqs, cur, prev = [], [], None
    for faces in faces_per_frame:
        if not faces:
            if cur:
                seqs.append(np.stack(cur))
            cur, prev = [], None
            continue
        f = max(faces, key=lambda x: float((x.box[2] - x.box[0]) * (x.box[3] - x.box[1])))
        if prev is not None:
            same = (f.track_id == prev.track_id) if hasattr(f, "track_id") else box_iou(prev.box[None], f.box[None])[0, 0] >= 0.3
            if not same:
                seqs.append(np.stack(cur))
                cur = []
        cur.append(getattr(f, attr))
        prev = f
    if cur:
        seqs.append(np.stack(cur))
    return seqs


def _centred_average(seq: np.ndarray, window: int = 5) -> np.ndarray:
    """``(T, K, 2)`` -> ``(T - window + 1, K, 2)``: the mean over ``window`` frames centred on each frame."""
    c = np.cumsum(np.concatenate([np.zeros((1, *seq.shape[1:])), seq]), axis=0)
    return (c[window:] - c[:-window]) / window


def _track_sequences(results: list[Any], attr: str = "landmarks") -> dict[int, np.ndarray]:
    """``(T, K, 2)`` landmarks (``attr``: ``landmarks`` or ``raw``) per track id (a track is in consecutive
    frames from its start to its end)."""
    by_id: dict[int, list[np.ndarray]] = {}
    for r in results:
        for f in r.faces:
            by_id.setdefault(f.track_id, []).append(getattr(f, attr))
    return {k: np.stack(v) for k, v in by_id.items()}


def _int8_one_pass(model_path: Path, lm: Any, crops_table: str) -> Any:
    """The model's int8 network without the flip test (what ``facelandmarks export --no-flip-test --quantize int8``
    writes, calibrated on the same training crops) as a landmarker sharing ``lm``'s detector; None without the table."""
    from facelandmarks.inference.landmarker import FaceLandmarker
    from facelandmarks.inference.quantize import calibration_crops, quantize_onnx

    if not Path(crops_table).is_file():
        log.warning("%s not found: the int8 one-pass network is not measured", crops_table)
        return None
    with tempfile.TemporaryDirectory(prefix="fl-video-int8-") as tmp:
        crops = calibration_crops(crops_table, lm.config.input_size)
        path = quantize_onnx(model_path, Path(tmp) / "video.int8.onnx", crops, flip_test=False)
        return FaceLandmarker.load(path, runtime="onnx", detector=lm.detector)  # ONNX Runtime holds it in memory


def _meta(path: Path) -> dict:
    from facelandmarks.model.checkpoint import read_checkpoint

    return dict(read_checkpoint(path).get("meta") or {})


def run_video(model_path: Path, options: VideoBenchOptions | None = None, params_path: str = "params.yaml") -> dict:
    """All video figures (see the module docstring).

    Returns:
        a JSON-ready dict: ``speed`` (with ``fixed_interval`` and the per-round ``rounds_fps``), ``jitter``,
        ``coverage``, ``int8_one_pass`` (when the crop table is there: fps on the clip and the shot, detector
        runs, jitter ratio, lag, street coverage), ``targets``, ``params`` and ``seconds``.
    """
    import torch

    from facelandmarks.inference.landmarker import FaceLandmarker
    from facelandmarks.video import VideoLandmarker, load_video_params

    opts = options or VideoBenchOptions()
    t_start = time.perf_counter()
    torch.set_num_threads(opts.threads)
    from facelandmarks.serving.config import load_serve_params

    serve = load_serve_params(params_path)  # the product's detection settings (predict, live and the service use them)
    lm = FaceLandmarker.load(model_path, device="cpu", min_score=serve.detect_min_score,
                             detect_max_side=serve.detect_max_side or None)
    vp = load_video_params(params_path)
    no_smooth = vp.model_copy(update={"smoothing": vp.smoothing.model_copy(update={"enabled": False})})
    out: dict[str, Any] = {"threads": opts.threads, "params": vp.model_dump(),
                           "detector": {"min_score": lm.detector.config.min_score, "max_side": lm.detector.config.max_side},
                           "model": {"source": str(model_path), "backbone": lm.config.backbone,
                                     "head": lm.config.head, "input_size": lm.config.input_size,
                                     "flip_test": bool(getattr(lm.config, "flip_test", False)),
                                     "meta": _meta(model_path)}}
    fps_src = _fps_of(SPEAKER)

    # speed + jitter on the speaker clip
    video = VideoLandmarker(lm, vp, fps=fps_src)

    def step(k: int, t: float, f: np.ndarray):
        if k == 0:  # each pass (warm-up, timed) is a new video
            video.reset()
        return video.step(f, t, k)

    # the same tracker with a fixed detector interval and no O-net check (before the back-off)
    fixed = VideoLandmarker(lm, vp.model_copy(update={"tracker": vp.tracker.model_copy(
        update={"detect_every_max": None, "min_face_score": 0.0})}), fps=fps_src)

    def step_fixed(k: int, t: float, f: np.ndarray):
        if k == 0:
            fixed.reset()
        return fixed.step(f, t, k)

    # the int8 network in one pass (the fastest video mode a user can export)
    lm8 = _int8_one_pass(model_path, lm, opts.crops_table)
    video8 = VideoLandmarker(lm8, vp, fps=fps_src) if lm8 is not None else None

    def step8(k: int, t: float, f: np.ndarray):
        if k == 0:
            video8.reset()
        return video8.step(f, t, k)

    # alternating rounds, so that every configuration sees the same machine load; medians are reported. The
    # outputs are the same in every round (nothing depends on time), only the clock differs
    rounds: dict[str, list[float]] = {"tracking": [], "fixed": [], "shot": []}
    if video8 is not None:
        rounds.update({"int8": [], "int8_shot": []})
    for _ in range(max(1, opts.rounds)):
        f, tracked = _timed(SPEAKER, step, opts.max_frames, opts.warmup)
        rounds["tracking"].append(f)
        runs_tracked = video.detector_runs
        f, _ = _timed(SPEAKER, step_fixed, opts.max_frames, opts.warmup)
        rounds["fixed"].append(f)
        runs_fixed = fixed.detector_runs
        # the speaker shot alone (one speaker, frames 82-210 between two cuts)
        f, shot = _timed(SPEAKER, step, 211, opts.warmup, start=82)
        rounds["shot"].append(f)
        if video8 is not None:
            f, tracked8 = _timed(SPEAKER, step8, opts.max_frames, opts.warmup)
            rounds["int8"].append(f)
            runs8 = video8.detector_runs
            rounds["int8_shot"].append(_timed(SPEAKER, step8, 211, opts.warmup, start=82)[0])
    fps_track, fps_fixed, fps_shot = (statistics.median(rounds[k]) for k in ("tracking", "fixed", "shot"))
    fps_shot_frame, shot_frame = _timed(SPEAKER, lambda k, t, f: lm(f), 211, opts.warmup, start=82)
    raw_video = VideoLandmarker(lm, no_smooth, fps=fps_src)
    raw = [raw_video.step(f, t, k) for k, t, f in _frames(SPEAKER, opts.max_frames)]
    fps_frame, per_frame = _timed(SPEAKER, lambda k, t, f: lm(f), opts.max_frames, opts.warmup)
    speed = {"video": SPEAKER.name, "frames": len(tracked), "frame_size": "640x360",
             "tracking_fps": fps_track, "per_frame_detection_fps": fps_frame,
             "detector_runs_tracking": runs_tracked,
             "fixed_interval": {"tracking_fps": fps_fixed, "detector_runs": runs_fixed},
             "rounds_fps": {k: [round(x, 2) for x in v] for k, v in rounds.items()},
             "speaker_shot": {"frames": len(shot), "tracking_fps": fps_shot, "per_frame_detection_fps": fps_shot_frame,
                              "faces_per_frame_tracking": statistics.fmean(len(r.faces) for r in shot),
                              "faces_per_frame_detection": statistics.fmean(len(f) for f in shot_frame)},
             "faces_per_frame_tracking": statistics.fmean(len(r.faces) for r in tracked),
             "faces_per_frame_detection": statistics.fmean(len(f) for f in per_frame)}
    if opts.dlib:
        from facelandmarks.baselines.dlib68 import DlibLandmarker

        dlib = DlibLandmarker()
        speed["dlib_fps"], _ = _timed(SPEAKER, lambda k, t, f: dlib(f), opts.max_frames, min(opts.warmup, 3))
    out["speed"] = speed

    # the lag: the smoothed points against the network's own points of the SAME run (before smoothing)
    smooth_seqs, lag = _smoothed_and_lag(tracked)
    ids = _track_sequences(tracked)
    per_frame_seqs = _largest_sequences(per_frame)
    out["jitter"] = {
        "video": SPEAKER.name,
        "face": "the largest face of each frame",
        "per_frame_detection": jitter(per_frame_seqs),
        # the face's own motion: per-frame detection's points averaged over 5 frames centred on each frame
        # (zero phase, so motion stays and most of the noise goes): what no smoothing may remove
        "motion_floor": jitter([_centred_average(q) for q in per_frame_seqs if len(q) >= 5]),
        "tracking_raw": jitter(_largest_sequences([r.faces for r in raw])),
        "tracking_smoothed": jitter(smooth_seqs),
        "lag_frames": lag,
        "longest_track_frames": max((len(v) for v in ids.values()), default=0),
        "tracks": len(ids),
    }
    # the speaker shot alone (frames 82-210, no cut): the same measures on the stillest part of the clip
    shot_per_frame = _largest_sequences(shot_frame)
    out["jitter"]["speaker_shot"] = {
        "per_frame_detection": jitter(shot_per_frame),
        "motion_floor": jitter([_centred_average(q) for q in shot_per_frame if len(q) >= 5]),
        "tracking_smoothed": jitter(_largest_sequences([r.faces for r in shot])),
    }
    # a still face (one real photo with camera noise, nothing moves): every move measured is jitter
    with tempfile.TemporaryDirectory(prefix="fl-still-") as tmp:
        clip = still_clip(STILL_PHOTO, Path(tmp) / "still.mp4", noise=opts.still_noise)
        still = list(_frames(clip))
        still_fps = _fps_of(clip)
    still_frame = [lm(f) for _, _, f in still]
    still_raw = VideoLandmarker(lm, no_smooth, fps=still_fps)
    still_raw_faces = [still_raw.step(f, t, k).faces for k, t, f in still]
    still_video = VideoLandmarker(lm, vp, fps=still_fps)
    still_faces = [still_video.step(f, t, k).faces for k, t, f in still]
    base = jitter(_largest_sequences(still_frame))
    out["jitter"]["still_face"] = {
        "photo": STILL_PHOTO.name, "frames": len(still), "noise": opts.still_noise,
        "inter_ocular_px": float(np.median([_iod(max(x, key=lambda f: float(np.prod(f.box[2:] - f.box[:2]))).landmarks)
                                            for x in still_frame if x])),
        "per_frame_detection": base, "tracking_raw": jitter(_largest_sequences(still_raw_faces)),
        "tracking_smoothed": jitter(_largest_sequences(still_faces)), "detector_runs_tracking": still_video.detector_runs,
    }
    sf = out["jitter"]["still_face"]
    sf["ratio_smoothed_vs_detection"] = sf["tracking_smoothed"]["mean"] / base["mean"]
    j = out["jitter"]
    j["ratio_smoothed_vs_detection"] = j["tracking_smoothed"]["mean"] / j["per_frame_detection"]["mean"]
    j["sweep"] = smoothing_sweep(lm, vp, list(_frames(SPEAKER, opts.max_frames)), fps_src, j["per_frame_detection"]["mean"])

    # coverage on the street clip
    street_fps = _fps_of(STREET)
    video = VideoLandmarker(lm, vp, fps=street_fps)
    t0 = time.perf_counter()
    street = [video.step(f, t, k) for k, t, f in _frames(STREET, opts.max_frames)]
    street_track_fps = len(street) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    dets = [lm.detector.detect([f])[0].boxes for _, _, f in _frames(STREET, opts.max_frames)]
    street_det_s = time.perf_counter() - t0
    cov = coverage([np.array([f.box for f in r.faces]).reshape(-1, 4) for r in street], dets)
    out["coverage"] = {"video": STREET.name, "frames": len(street), "frame_size": "1920x1080", **cov,
                       "tracks": len({f.track_id for r in street for f in r.faces}),
                       "detector_runs_tracking": video.detector_runs,
                       "tracking_fps": street_track_fps, "detection_only_fps": len(dets) / street_det_s}
    if video8 is not None:
        tracker8 = VideoLandmarker(lm8, vp, fps=street_fps)
        street8 = [tracker8.step(f, t, k) for k, t, f in _frames(STREET, opts.max_frames)]
        smoothed8, lag8 = _smoothed_and_lag(tracked8)
        out["int8_one_pass"] = {
            "tracking_fps": statistics.median(rounds["int8"]), "shot_tracking_fps": statistics.median(rounds["int8_shot"]),
            "detector_runs": runs8, "quantization": lm8.model.quantization,
            "jitter_ratio": jitter(smoothed8)["mean"] / j["per_frame_detection"]["mean"], "lag_frames": lag8,
            "street_covered": coverage([np.array([f.box for f in r.faces]).reshape(-1, 4) for r in street8], dets)["covered"],
        }
    out["targets"] = {
        "fps_60": speed["speaker_shot"]["tracking_fps"] >= 60.0,  # one face (the whole clip has cuts and up to 4 faces)
        "jitter_half": j["ratio_smoothed_vs_detection"] <= 0.5,  # the issue's clip
        "jitter_half_still_face": sf["ratio_smoothed_vs_detection"] <= 0.5,
        "lag_1_frame": j["lag_frames"] <= 1.0,
        "coverage_95": cov["covered"] >= 0.95,
    }
    out["seconds"] = time.perf_counter() - t_start
    return out


def demo_gif(model_path: Path, out: Path, start: int = 82, stop: int = 211, every: int = 3, max_side: int = 320,
             params_path: str = "params.yaml") -> dict:
    """The README's tracking GIF: the speaker shot of the demo clip (frames ``start .. stop - 1``), tracked
    on every frame with the project's ``video`` params, drawn with track ids, every ``every``-th frame kept.

    Returns:
        ``{"path", "frames", "bytes"}``.
    """
    from facelandmarks.inference.landmarker import FaceLandmarker
    from facelandmarks.media import resize_max_side, write_gif
    from facelandmarks.serving.config import load_serve_params
    from facelandmarks.video import VideoLandmarker, draw_tracked, load_video_params

    serve = load_serve_params(params_path)
    lm = FaceLandmarker.load(model_path, device="cpu", min_score=serve.detect_min_score,
                             detect_max_side=serve.detect_max_side or None)
    fps = _fps_of(SPEAKER)
    video = VideoLandmarker(lm, load_video_params(params_path), fps=fps)
    frames = []
    for k, t, f in _frames(SPEAKER, stop):
        if k < start:
            continue
        r = video.step(f, t, k)
        if (k - start) % every == 0:
            frames.append(resize_max_side(draw_tracked(f, r.faces, lm.scheme), max_side))
    write_gif(frames, out, fps / every)
    return {"path": str(out), "frames": len(frames), "bytes": out.stat().st_size}


def markdown(r: dict) -> str:
    """The results as a Markdown table (README / issue note)."""
    s, j, c = r["speed"], r["jitter"], r["coverage"]
    sh = s["speaker_shot"]
    rows = [
        (f"fps, speaker clip 640x360 ({s['frames']} frames, 4 shots), tracking (end to end; median of "
         f"{len(s.get('rounds_fps', {}).get('tracking', [])) or 1} alternating rounds)", f"{s['tracking_fps']:.1f}"),
        ("fps, speaker clip, MTCNN on every frame", f"{s['per_frame_detection_fps']:.1f}"),
        (f"fps, the speaker shot ({sh['frames']} frames, {sh['faces_per_frame_detection']:.1f} faces per frame), "
         "tracking / MTCNN on every frame", f"{sh['tracking_fps']:.1f} / {sh['per_frame_detection_fps']:.1f}"),
    ]
    if "dlib_fps" in s:
        rows.append(("fps, speaker clip, dlib HOG + shape predictor", f"{s['dlib_fps']:.1f}"))
    rows += [
        ("MTCNN runs with tracking / frames", f"{s['detector_runs_tracking']} / {s['frames']}"),
    ]
    if s.get("fixed_interval"):
        fx = s["fixed_interval"]
        rows.append(("speaker clip, MTCNN every detect_every frames without back-off or O-net check: fps / MTCNN runs",
                     f"{fx['tracking_fps']:.1f} / {fx['detector_runs']}"))
    rows += [
        ("jitter (mean frame-to-frame move / inter-ocular), per-frame detection", f"{j['per_frame_detection']['mean']:.4f}"),
        ("jitter, tracking, no smoothing", f"{j['tracking_raw']['mean']:.4f}"),
        ("jitter, tracking + One Euro", f"{j['tracking_smoothed']['mean']:.4f} ({j['ratio_smoothed_vs_detection']:.2f} x per-frame)"),
        ("the face's own motion (5-frame centred mean of per-frame detection)", f"{j['motion_floor']['mean']:.4f}"),
        ("lag added by smoothing (frames)", f"{j['lag_frames']:.2f}"),
    ]
    if r.get("int8_one_pass"):
        q = r["int8_one_pass"]
        rows.append(("int8 network in one pass (`export --no-flip-test --quantize int8`, same rounds): fps clip / shot, "
                     "MTCNN runs, jitter vs per-frame, lag, street coverage",
                     f"{q['tracking_fps']:.1f} / {q['shot_tracking_fps']:.1f}, {q['detector_runs']}, {q['jitter_ratio']:.2f} x, "
                     f"{q['lag_frames']:.2f}, {100 * q['street_covered']:.1f} %"))
    if j.get("speaker_shot"):
        sj = j["speaker_shot"]
        base = sj["per_frame_detection"]["mean"]
        rows.append(("speaker shot alone: jitter per-frame detection / tracking + One Euro / the face's own motion",
                     f"{base:.4f} / {sj['tracking_smoothed']['mean']:.4f} ({sj['tracking_smoothed']['mean'] / base:.2f} x) / "
                     f"{sj['motion_floor']['mean']:.4f} ({sj['motion_floor']['mean'] / base:.2f} x)"))
    if j.get("still_face"):
        sf = j["still_face"]
        rows.append((f"still face ({sf['frames']} frames of one photo, camera noise {sf['noise']:g} grey levels, mp4v; "
                     f"inter-ocular {sf['inter_ocular_px']:.0f} px): jitter per-frame detection / tracking, no smoothing / "
                     "tracking + One Euro",
                     f"{sf['per_frame_detection']['mean']:.4f} / {sf['tracking_raw']['mean']:.4f} / "
                     f"{sf['tracking_smoothed']['mean']:.4f} ({sf['ratio_smoothed_vs_detection']:.2f} x)"))
    rows += [
        ("street clip: faces per frame, MTCNN on every frame", f"{c['detected_per_frame']:.2f}"),
        ("street clip: faces per frame, tracking", f"{c['tracked_per_frame']:.2f}"),
        ("street clip: per-frame detections covered by a track", f"{100 * c['covered']:.1f} %"),
        ("street clip 1920x1080: fps tracking / MTCNN alone", f"{c['tracking_fps']:.1f} / {c['detection_only_fps']:.1f}"),
    ]
    lines = ["| video benchmark | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    if j.get("sweep"):
        lines += ["", "One Euro settings, one tracking run each (jitter / per-frame detection's, lag in frames):", "",
                  "| min_cutoff (Hz) | beta | jitter ratio | lag |", "|---|---|---|---|"]
        lines += [f"| {x['min_cutoff']} | {x['beta']} | {x['ratio']:.2f} | {x['lag_frames']:.2f} |" for x in j["sweep"]]
    m = r["model"]
    lines.append("")
    lines.append(f"Model: {m['source']} ({m['backbone']}, {m['head']}, {m['input_size']} px; flip test "
                 f"{'on' if m['flip_test'] else 'off'} per photo, {'on' if r['params']['flip_test'] else 'off'} in "
                 f"video mode); network in video mode: {r['params'].get('runtime', 'torch')}; torch threads: "
                 f"{r['threads']}; MTCNN score floor {r.get('detector', {}).get('min_score', 'n/a')}, photos "
                 f"downscaled to {r.get('detector', {}).get('max_side', 'n/a')} px; MTCNN stage thresholds in video "
                 f"{r['params'].get('detect_thresholds') or 'of the model'} (per frame: the model's); MTCNN every "
                 f"{r['params']['tracker']['detect_every']} frames at most"
                 + (f", backing off to every {r['params']['tracker']['detect_every_max']} while its runs only confirm the tracks"
                    if r['params']['tracker'].get('detect_every_max') else "")
                 + (f"; O-net check of each track's box between runs (score >= {r['params']['tracker']['min_face_score']})"
                    if r['params']['tracker'].get('min_face_score') else "")
                 + "; crop motion prediction "
                 f"{r['params']['tracker'].get('motion', 0.0)}; crop hold {r['params']['tracker'].get('hold', 0.0)} x box side; "
                 f"One Euro min_cutoff {r['params']['smoothing']['min_cutoff']} Hz, beta "
                 f"{r['params']['smoothing']['beta']}.")
    meta = m.get("meta") or {}
    if m.get("stand_in") or meta.get("stage") == "benchmark stand-in":
        lines.append(m.get("stand_in") and f"NOTE: {m['stand_in']}." or
                     f"NOTE: a stand-in model (params.yaml's architecture trained briefly on 300-W faces, validation "
                     f"NME {meta.get('val_nme', float('nan')):.3f}), not a trained champion: speed holds, jitter and "
                     "coverage are worse than with a trained model.")
    return "\n".join(lines) + "\n"


@app.command()
def main(
    model: Annotated[str, typer.Option(help="checkpoint or MLflow URI; `champion`: the registry's, else models/finetune/model.pt")] = "champion",
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 1,
    max_frames: Annotated[int, typer.Option(help="frames per clip (0 = all)")] = 0,
    dlib: Annotated[bool, typer.Option(help="also time dlib HOG + predictor")] = True,
    stand_in: Annotated[bool, typer.Option("--stand-in", help="no trained model: train a stand-in briefly")] = False,
    stand_in_seconds: Annotated[float, typer.Option(help="training time of the stand-in")] = 60.0,
    out: Annotated[Path, typer.Option(help="results JSON (a .md beside it)")] = Path("benchmarks/video_results.json"),
    gif: Annotated[Path | None, typer.Option(help="also write the tracking demo GIF here (e.g. reports/figures/tracking_demo.gif)")] = None,
    skip_measure: Annotated[bool, typer.Option("--skip-measure", help="only the GIF")] = False,
) -> None:
    """Measure tracking speed, jitter, smoothing lag and track coverage on the demo videos."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import torch

    from benchmarks.run import resolve_model
    from facelandmarks.params import load_params

    torch.set_num_threads(threads)
    opts = VideoBenchOptions(threads=threads, max_frames=max_frames, dlib=dlib)
    with contextlib.ExitStack() as stack:
        if stand_in:
            path, source = stand_in_checkpoint(Path("benchmarks/out/stand_in"), stand_in_seconds), "stand-in"
        else:
            path, source = stack.enter_context(resolve_model(model, load_params("params.yaml")))
        if gif is not None:
            typer.echo(f"demo GIF: {demo_gif(Path(path), gif)}")
        if skip_measure:
            return
        result = run_video(Path(path), opts)
        result["model"]["source"] = str(source)
        if stand_in:
            result["model"]["stand_in"] = (f"default architecture trained {stand_in_seconds:.0f} s on 300-W faces "
                                           "(a stand-in, far less accurate than a trained model)")
    out.parent.mkdir(parents=True, exist_ok=True)
    from facelandmarks.fsutil import write_json

    write_json(out, result)
    md = markdown(result)
    out.with_suffix(".md").write_text(md)
    typer.echo(md)
    typer.echo(json.dumps(result["targets"]))


if __name__ == "__main__":
    app()
