"""Settings of the video mode: the ``video`` section of params.yaml (tracker and temporal smoothing).

Every sub-section is a strict pydantic model: an unknown key is an error naming the file and key.
The params file is ``FACELANDMARKS_PARAMS`` when set, else ``./params.yaml`` (defaults when there is
none or it has no ``video`` section), the same file the service and ``facelandmarks predict`` read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from facelandmarks.params import StrictModel, load_params, section

__all__ = ["SmoothingParams", "TrackerParams", "VideoParams", "load_video_params"]


class TrackerParams(StrictModel):
    """How faces are followed from frame to frame (:class:`facelandmarks.video.VideoLandmarker`).

    The box of each face in the next frame is derived from its landmarks in this frame (the model's
    ``crop.fallback`` calibration, :func:`facelandmarks.crop.faces.fallback_box`); MTCNN runs only when
    one of the conditions below asks for it.

    Attributes:
        detect_every: MTCNN runs on every ``detect_every``-th frame (new faces are found then); 1 = every
            frame (per-frame detection, tracks still get ids and smoothing).
        detect_every_max: back-off of the periodic detector run (None: off, every ``detect_every`` frames). A
            periodic run that changes nothing (every track matched and no new face, or no face in a frame without
            tracks) lengthens the interval
            by ``detect_every`` frames up to this many; any other run (a new face, a missed track, a failed
            quality check, a cut) brings it back to ``detect_every``. On a scene whose faces stay, the detector
            runs less and less; a face entering it is found at most ``detect_every_max`` frames late.
        match_iou: a detection continues the track whose predicted box it overlaps most, at IoU >= this
            (greedy one-to-one, :func:`facelandmarks.detect.matching.match_boxes`); other detections
            start new tracks.
        keep_iou: a matched track keeps its own landmark-derived box when it overlaps the detection at
            IoU >= this (no jump in the crop, hence less jitter); below, the crop restarts from the
            detection box.
        max_misses: detector runs in a row that may miss a track before it ends; while a track is
            missed the detector runs again on the next frame to confirm it.
        max_scale_change: quality check between detections: when the side of the box derived from the
            new landmarks differs from the crop box's side by more than this fraction, the track is
            suspect and the detector runs on this frame.
        max_shift: quality check: the same when the box centre moves by more than this fraction of the
            box side.
        min_face_score: quality check: between detector runs, MTCNN's O-net (its face / non-face stage,
            :class:`facelandmarks.video.verify.FaceVerifier`) scores the box of each track's new
            landmarks; below this the track is suspect and the detector runs on this frame (a face that left,
            turned away or was covered ends instead of carrying its points across whatever took its place).
            About 0.5 ms per face; 0 = off.
        min_side: tracks whose box side falls below this many pixels end.
        duplicate_iou: two tracks whose boxes overlap at IoU >= this follow one face: the younger ends.
        calibrate: learn, from the faces landmarked in detection boxes of this video, how the model's
            landmark box sits in MTCNN's box (mean log side ratio and centre offset) and correct the
            landmark -> box conversion with it, so a model whose points are a little tight or loose does
            not make its tracks' boxes shrink or grow from frame to frame.
        motion: constant-velocity prediction of the next crop box: the box of the network's points in
            this frame, shifted by this times the move of the smoothed points' box centre over the last
            frame (pixels per frame; the smoothed velocity feeds no frame-to-frame noise back into the
            crop). A walking face moves a third of its box per frame in the street clip; a crop that
            stays where the face was gets landmarks pulled back towards the crop centre, and the track
            falls behind and loses the face. 0 = the crop stays where the face was.
        hold: crop hold, a fraction of the box side: the next frame's crop box stays exactly this frame's while the
            predicted box (above) is within this of it, in centre shift and in side change; only a larger move
            moves the crop. A still face then keeps one crop, so its points change only with the pixels, not with
            the network's own noise fed back through the crop position. 0 = the crop follows every frame.
    """

    detect_every: int = Field(5, ge=1)
    detect_every_max: int | None = Field(None, ge=1)
    match_iou: float = Field(0.3, gt=0.0, le=1.0)
    keep_iou: float = Field(0.5, ge=0.0, le=1.0)
    max_misses: int = Field(1, ge=0)
    max_scale_change: float = Field(0.3, gt=0.0)
    max_shift: float = Field(0.35, gt=0.0)
    min_face_score: float = Field(0.0, ge=0.0, lt=1.0)
    min_side: float = Field(12.0, ge=2.0)
    duplicate_iou: float = Field(0.5, gt=0.0, le=1.0)
    calibrate: bool = True
    motion: float = Field(1.0, ge=0.0, le=2.0)
    hold: float = Field(0.0, ge=0.0, le=0.2)


class SmoothingParams(StrictModel):
    """Temporal smoothing of each track's landmarks: the One Euro filter (Casiez, Roussel and Vogel,
    "1 Euro Filter: A Simple Speed-based Low-pass Filter for Noisy Input in Interactive Systems", CHI 2012).

    Each coordinate goes through its own filter, in units of the face size (pixels divided by the
    side of the track's first box), so the same settings suit small and large faces. The cutoff
    frequency is ``min_cutoff + beta * |speed|``: still faces are smoothed strongly, moving ones follow
    with little lag.

    Attributes:
        enabled: return the smoothed landmarks (false: the network's own; the tracker still predicts the next crop
            from the smoothed move, so the tracking is the same either way).
        min_cutoff: cutoff frequency in Hz at zero speed (lower: less jitter, more lag when slow).
        beta: cutoff increase per unit of speed (face sizes per second); higher: less lag when moving.
        d_cutoff: cutoff frequency in Hz of the speed estimate.
    """

    enabled: bool = True
    min_cutoff: float = Field(4.0, gt=0.0)
    beta: float = Field(1.0, ge=0.0)
    d_cutoff: float = Field(1.0, gt=0.0)


class VideoParams(StrictModel):
    """The ``video`` section of params.yaml (video files, GIFs, ``/annotate_gif`` and ``facelandmarks live``).

    Attributes:
        tracker: :class:`TrackerParams`.
        smoothing: :class:`SmoothingParams`.
        flip_test: run the model's flip test (a second, mirrored pass per face, ``model.flip_test``) in
            video mode too; false halves the network's cost per frame, and the temporal smoothing removes
            more of the frame-to-frame noise than the flip test would.
        runtime: the landmark network's runtime in video mode on the CPU: ``onnx`` (ONNX Runtime, the graph
            built in memory from the torch model once) or ``torch``; a GPU always runs torch.
        onnx_threads: ONNX Runtime calls at once, one thread each (0: one per core).
        rotated_retry: keep the detector's rotated retry (``crop.detector.rotate_angles``) in video mode; off by
            default: a frame without a confident face (common in video) would cost one MTCNN pass per angle,
            and a tracked face needs no detector once found.
        detect_thresholds: MTCNN's P-, R- and O-net thresholds in video mode (None: the model's
            ``crop.detector.thresholds``). The model's low thresholds (0.3/0.4/0.4) find more faces in single
            photos but send ~500 candidate boxes per 640x360 frame through the R-net; facenet-pytorch's
            0.6/0.7/0.7 makes MTCNN ~1.6x faster there, and a face one detector run misses is found by the
            next one a few frames later.
        detect_factor: MTCNN's image pyramid step in video mode (None: the model's ``crop.detector.factor``,
            0.709). A coarser pyramid (0.55) costs 35 % less per detector run (70 -> 46 ms on a 640x360 frame,
            one thread) and misses a few more faces per run, which a shorter ``tracker.detect_every`` (4) makes
            up for on the street clip (coverage 96.6 % either way); on the speaker clip that pair measured
            50.8 instead of 39.5 frames/s but 0.85x instead of 0.67x of per-frame detection's jitter
            (benchmarks/video.py), so it is off by default.
    """

    tracker: TrackerParams = Field(default_factory=TrackerParams)
    smoothing: SmoothingParams = Field(default_factory=SmoothingParams)
    flip_test: bool = False
    runtime: Literal["torch", "onnx"] = "onnx"
    onnx_threads: int = Field(0, ge=0)
    rotated_retry: bool = False
    detect_thresholds: tuple[float, float, float] | None = None
    detect_factor: float | None = Field(None, gt=0.0, lt=1.0)


def load_video_params(path: str | os.PathLike | None = None) -> VideoParams:
    """The video settings.

    Args:
        path: a params file (default: ``$FACELANDMARKS_PARAMS``, else ``./params.yaml``).
    Returns:
        :class:`VideoParams` (defaults when the file or its ``video`` section is absent).
    Raises:
        ValueError: an invalid ``video`` section (the message names the file and the keys).
    """
    p = Path(path or os.environ.get("FACELANDMARKS_PARAMS") or "params.yaml")
    params = load_params(p) if p.is_file() else {}
    return section(params, "video", VideoParams, str(p)) if "video" in params else VideoParams()
