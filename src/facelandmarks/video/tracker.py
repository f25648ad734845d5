"""Face tracking in video: landmarks of every face in every frame, MTCNN only when needed.

:class:`VideoLandmarker` is the video mode of :class:`facelandmarks.inference.FaceLandmarker`. Per frame:

1. each live track's crop box is derived from its landmarks of the previous frame (the network's own
   points, not the smoothed ones, which lag a moving face), shifted by the smoothed points' move over the
   last frame (constant-velocity prediction, ``motion``), or is the previous frame's crop box again while that
   prediction stays within ``hold`` of it (a still face keeps one crop), with the model's ``crop.fallback`` calibration
   (:func:`facelandmarks.crop.faces.fallback_box`, the same landmark -> MTCNN-like box conversion the
   crop stage uses for missed faces and evaluation uses for annotated faces), and all crops go through
   the landmark network in one batch (:meth:`FaceLandmarker.landmarks_in_boxes`);
2. MTCNN runs on the frame only when

   * ``detect_every`` frames have passed since it last ran (new faces are found then; with
     ``detect_every_max`` the interval grows while the runs only confirm the tracks),
   * a track fails the quality check (the box of its new landmarks shrank, grew or jumped relative to
     the crop box beyond ``max_scale_change`` / ``max_shift``, or MTCNN's O-net scores that box below
     ``min_face_score``, :class:`facelandmarks.video.verify.FaceVerifier`: the face was lost or occluded),
   * a track was missed by the previous detector run (confirmation), its last landmarks disagreed
     with their box (step 3), or it is the first frame;

   detections are matched to tracks by IoU (:func:`facelandmarks.detect.matching.match_boxes`); a
   matched track keeps its id (and its own box unless the detection disagrees, ``keep_iou``), an
   unmatched detection starts a new track, a track missed ``max_misses + 1`` times in a row or failing
   the quality check without a detection ends;
3. a track whose landmarks still disagree with their crop box (a poor prediction) keeps the crop box
   for the next frame, on which MTCNN runs again; tracks whose box centre left the frame, whose box
   became smaller than ``min_side`` or that duplicate an older track (``duplicate_iou``) end;
4. each track's landmarks are smoothed over time with the One Euro filter
   (:class:`facelandmarks.video.smoothing.LandmarkSmoother`); the smoothed points are returned when
   smoothing is enabled, and always give the move that step 1 predicts the next crop with, so turning the
   output smoothing off changes the output only, not the tracking.

Same frames in, same output: nothing depends on wall-clock time (timestamps come from frame indices
or the container).

Example:
    >>> from facelandmarks import FaceLandmarker
    >>> from facelandmarks.video import VideoLandmarker
    >>> video = VideoLandmarker(FaceLandmarker.load("models/finetune/model.pt"))
    >>> for frame in video.track(frames, fps=30.0):      # frames: iterable of (H, W, 3) uint8 RGB
    ...     for face in frame.faces:
    ...         print(frame.index, face.track_id, face.landmarks.shape)   # (68, 2) float32 pixels
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelandmarks.crop.config import FallbackConfig
from facelandmarks.crop.faces import fallback_box
from facelandmarks.detect.matching import box_iou, match_boxes
from facelandmarks.detect.mtcnn import FaceDetector
from facelandmarks.inference.landmarker import FaceLandmarker
from facelandmarks.io.images import to_rgb_uint8
from facelandmarks.video.config import SmoothingParams, TrackerParams, VideoParams
from facelandmarks.video.smoothing import LandmarkSmoother
from facelandmarks.video.verify import FaceVerifier

__all__ = ["FrameResult", "TrackedFace", "VideoLandmarker", "frame_record"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackedFace:
    """One face in one frame of a video.

    Attributes:
        track_id: id of the face's track (1, 2, ...; stable while the face is followed).
        box: ``(4,) float32`` MTCNN-like box x0, y0, x1, y1 in frame pixels, derived from ``landmarks``
            with the model's ``crop.fallback`` calibration (the detection's box when the landmarks
            disagree with it, see the quality check).
        score: MTCNN face probability: of this frame's detection, or between detector runs MTCNN's O-net on
            this frame's box (``tracker.min_face_score``; with that check off, of the last detection).
        landmarks: ``(K, 2) float32`` x, y in 0-based frame pixels (smoothed when smoothing is on).
        detected: whether a detection in this frame matched (or started) the track.
        raw: ``(K, 2) float32`` the network's landmarks before smoothing (``landmarks`` when smoothing is off).
    """

    track_id: int
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    detected: bool
    raw: np.ndarray | None = None

    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """JSON-ready form: ``{"track", "box", "score", "detected", "landmarks": [[x, y] x K]}``."""
        return {
            "track": int(self.track_id),
            "box": [round(float(v), decimals) for v in self.box],
            "score": round(float(self.score), 4),
            "detected": bool(self.detected),
            "landmarks": [[round(float(x), decimals), round(float(y), decimals)] for x, y in self.landmarks],
        }


@dataclass(frozen=True)
class FrameResult:
    """The faces of one frame.

    Attributes:
        index: frame index in the source (0-based).
        time: frame time in seconds.
        faces: the tracked faces, by track id.
        detector: whether MTCNN ran on this frame.
    """

    index: int
    time: float
    faces: list[TrackedFace]
    detector: bool


def frame_record(result: FrameResult, decimals: int = 2) -> dict[str, Any]:
    """One JSON-lines record of a frame: ``{"frame", "time", "detector", "faces": [TrackedFace.to_dict()]}``.

    Coordinates are 0-based frame pixels; ``time`` in seconds (3 decimals).
    """
    return {
        "frame": int(result.index),
        "time": round(float(result.time), 3),
        "detector": bool(result.detector),
        "faces": [f.to_dict(decimals) for f in result.faces],
    }


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # crop box for the next frame (last raw landmarks' box + predicted move), (4,) float64
    score: float
    smoother: LandmarkSmoother  # also with smoothing off: the crop's motion estimate uses it
    misses: int = 0
    unsure: bool = False  # its last landmarks disagreed with their crop box: the box is the detection's
    age: int = 0
    centre: np.ndarray | None = None  # centre of the last frame's smoothed landmark box, (2,) float64
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))


def _side(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])


def _centre(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (b[:, :2] + b[:, 2:]) / 2.0


class VideoLandmarker:
    """Track faces through a video and put landmarks on them (see the module docstring for the steps).

    One instance follows one video: call :meth:`step` frame by frame (or :meth:`track` on an iterable)
    and :meth:`reset` before another video. Not thread-safe; the wrapped :class:`FaceLandmarker` may be
    shared.

    Args:
        landmarker: the photo predictor (its detector, crop settings and network are used; without the
            model's flip test unless ``params.flip_test``; on the CPU run by ``params.runtime``).
        params: tracker and smoothing settings (params.yaml ``video``; defaults when None).
        fps: frame rate in Hz assumed for smoothing when frames come without timestamps.
    Attributes:
        detector: the MTCNN detector (the landmarker's, without its rotated retry unless ``params.rotated_retry``,
            with ``params.detect_thresholds`` and ``params.detect_factor`` when set).
        detector_runs: frames on which MTCNN ran since the last :meth:`reset`.
        frames: frames processed since the last :meth:`reset`.
    """

    def __init__(self, landmarker: FaceLandmarker, params: VideoParams | None = None, fps: float = 30.0) -> None:
        params = params or VideoParams()
        if landmarker.runtime == "onnx":  # an exported graph keeps its own flip test
            self.landmarker = landmarker
        else:  # a single pass per face (smoothing removes more noise than the flip test), ONNX Runtime on the CPU
            runtime = params.runtime if landmarker.device == "cpu" else "torch"
            flip = params.flip_test and bool(getattr(landmarker.config, "flip_test", False))  # the model's own, or off
            self.landmarker = landmarker.variant(runtime, flip, num_threads=params.onnx_threads)
        self.detector = landmarker.detector
        update: dict[str, Any] = {}
        if not params.rotated_retry and landmarker.detector.config.rotate_angles:
            update["rotate_angles"] = ()
        if params.detect_thresholds is not None and tuple(params.detect_thresholds) != tuple(landmarker.detector.config.thresholds):
            update["thresholds"] = tuple(params.detect_thresholds)
        if params.detect_factor is not None and params.detect_factor != landmarker.detector.config.factor:
            update["factor"] = float(params.detect_factor)
        if update:
            self.detector = FaceDetector(landmarker.detector.config.model_copy(update=update))
        self.tracker: TrackerParams = params.tracker
        self.smoothing: SmoothingParams = params.smoothing
        self.fps = float(fps)
        self._fallback = FallbackConfig.model_validate((landmarker.config.crop or {}).get("fallback") or {})
        self.reset()

    def reset(self, fps: float | None = None) -> None:
        """Forget every track (ids start again at 1); optionally set the frame rate of the next video."""
        if fps is not None:
            if not fps > 0:
                raise ValueError(f"VideoLandmarker: fps must be > 0, got {fps}")
            self.fps = float(fps)
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._since_detect = 0
        self._interval = self.tracker.detect_every  # frames between periodic detector runs (detect_every_max: grows)
        self._first = True
        self._cal_sum = np.zeros(3, np.float64)
        self._cal_n = 0
        self.detector_runs = 0
        self.frames = 0

    # -- the steps --------------------------------------------------------------------------------

    def _verifier(self) -> FaceVerifier:
        """The O-net check of ``tracker.min_face_score`` (the process's one for the detector's device)."""
        return FaceVerifier.shared(self.detector.device)

    def _box_of(self, landmarks: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """The MTCNN-like box of landmarks: ``crop.fallback``, then this video's correction (``calibrate``)."""
        try:
            box = fallback_box(landmarks, self._fallback).astype(np.float64)
        except ValueError:  # non-finite landmarks: a degenerate box ends the track
            return np.zeros(4, np.float64)
        if calibrated and self._cal_n:
            log_scale, dx, dy = self._cal_sum / self._cal_n
            side = _side(box)[0]
            c = _centre(box)[0] + np.array([dx, dy]) * side
            half = side * np.exp(log_scale) / 2.0
            box = np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])
        return box

    def _calibrate(self, detection_boxes: np.ndarray, landmarks: np.ndarray) -> None:
        """Learn how this model's landmark boxes sit in MTCNN's boxes: landmarks found in detection crops
        give ``log(side ratio)`` and the centre offset (in box sides); their running mean corrects
        :meth:`_box_of`, so the box a track carries to the next frame is the detector's, not a drifting one."""
        for d, pts in zip(np.asarray(detection_boxes, np.float64).reshape(-1, 4), landmarks):
            b = self._box_of(pts, calibrated=False)
            sb = _side(b)[0]
            if sb <= 0:
                continue
            obs = np.array([np.log(_side(d)[0] / sb), *((_centre(d)[0] - _centre(b)[0]) / sb)])
            if abs(obs[0]) < np.log(2.0) and np.hypot(obs[1], obs[2]) < 0.5:  # not a wild prediction
                self._cal_sum += obs
                self._cal_n += 1

    def _consistent(self, boxes_from_landmarks: np.ndarray, crop_boxes: np.ndarray) -> np.ndarray:
        """Quality check: ``(n,) bool``, the new landmark box agrees with the crop box in size and place."""
        s_crop, s_new = _side(crop_boxes), _side(boxes_from_landmarks)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = s_new / s_crop
            shift = np.linalg.norm(_centre(boxes_from_landmarks) - _centre(crop_boxes), axis=1) / s_crop
        limit = 1.0 + self.tracker.max_scale_change
        return np.isfinite(ratio) & (ratio <= limit) & (ratio >= 1.0 / limit) & (shift <= self.tracker.max_shift)

    def _within_hold(self, box: np.ndarray, crop: np.ndarray) -> bool:
        """Whether ``box`` is within ``tracker.hold`` of the crop box ``crop`` (centre shift and side change, in
        crop box sides), so the crop need not move."""
        hold = self.tracker.hold
        if hold <= 0:
            return False
        side = _side(crop)[0]
        if not side > 0:
            return False
        shift = float(np.linalg.norm(_centre(box)[0] - _centre(crop)[0])) / side
        return shift <= hold and abs(_side(box)[0] / side - 1.0) <= hold

    def _new_track(self, box: np.ndarray, score: float) -> _Track:
        smoother = LandmarkSmoother(self.smoothing, self.landmarker.scheme.num_points, self.fps, float(_side(box)[0]))
        t = _Track(track_id=self._next_id, box=np.asarray(box, np.float64), score=float(score), smoother=smoother)
        self._next_id += 1
        return t

    def step(self, frame: np.ndarray, timestamp: float | None = None, index: int | None = None) -> FrameResult:
        """Process the next frame of the video.

        Args:
            frame: ``(H, W, 3) uint8`` RGB (grayscale, RGBA and 16-bit arrays are converted).
            timestamp: the frame's time in seconds (default: ``frames / fps``).
            index: the frame's index in the source (default: frames processed so far).
        Returns:
            :class:`FrameResult` with one :class:`TrackedFace` per live track.
        Raises:
            facelandmarks.io.images.ImageReadError: an array that is not an image.
        """
        image = to_rgb_uint8(frame, f"frame {self.frames}")
        h, w = image.shape[:2]
        idx = self.frames if index is None else int(index)
        time = idx / self.fps if timestamp is None else float(timestamp)
        cfg = self.tracker
        tracks = self._tracks
        pred = np.array([t.box for t in tracks], np.float64).reshape(-1, 4)
        n = len(tracks)
        asked = self._first or any(t.misses or t.unsure for t in tracks)  # a run this frame needs, whatever the interval
        detect = asked or self._since_detect + 1 >= self._interval

        pts: np.ndarray | None = None
        failed = np.zeros(n, bool)
        if not detect and n:
            pts = self.landmarker.landmarks_in_boxes(image, pred)
            found = np.stack([self._box_of(p) for p in pts])
            failed = ~self._consistent(found, pred)
            if cfg.min_face_score > 0:  # MTCNN's O-net on the box of the new landmarks: is there still a face?
                face = self._verifier().face_scores(image, found)
                failed |= face < cfg.min_face_score
                for t, sc in zip(tracks, face):
                    t.score = float(sc)
            detect = bool(failed.any())
            if detect:
                log.debug("frame %d: tracks %s failed the quality check", idx, [tracks[i].track_id for i in np.flatnonzero(failed)])

        crop = pred.copy()
        detected = np.zeros(n, bool)
        alive = np.ones(n, bool)
        recompute = np.zeros(n, bool) if pts is not None else np.ones(n, bool)
        from_det = np.zeros(n, bool)  # crop = this frame's detection box
        if detect:
            dets = self.detector.detect([image])[0]
            self.detector_runs += 1
            self._since_detect = 0
            index_of, iou = match_boxes(dets.boxes, pred, cfg.match_iou)
            for ti, di in enumerate(index_of):
                t = tracks[ti]
                if di >= 0:
                    t.misses, t.score, detected[ti] = 0, float(dets.scores[di]), True
                    if failed[ti] or t.unsure or iou[ti] < cfg.keep_iou:
                        crop[ti] = dets.boxes[di]
                        recompute[ti] = from_det[ti] = True
                else:
                    t.misses += 1
                    alive[ti] = not failed[ti] and t.misses <= cfg.max_misses
                    log.debug("frame %d: track %d missed by the detector (%d in a row)%s", idx, t.track_id, t.misses,
                              "" if alive[ti] else ": ended")
            used = set(int(d) for d in index_of if d >= 0)
            for di in range(len(dets)):
                if di not in used and _side(dets.boxes[di])[0] >= cfg.min_side:
                    tracks.append(self._new_track(dets.boxes[di], float(dets.scores[di])))
                    crop = np.vstack([crop, np.asarray(dets.boxes[di], np.float64)[None]])
                    detected = np.append(detected, True)
                    alive = np.append(alive, True)
                    recompute = np.append(recompute, True)
                    from_det = np.append(from_det, True)
            # back-off: a periodic run that changed nothing (every track confirmed, no new face; on a frame without
            # tracks: no face) lengthens the interval by detect_every up to detect_every_max; anything else brings
            # it back to detect_every
            quiet = not asked and not failed.any() and len(tracks) == n and bool((index_of >= 0).all())  # n = 0: none found
            top = max(cfg.detect_every, cfg.detect_every_max or cfg.detect_every)
            self._interval = min(top, self._interval + cfg.detect_every) if quiet else cfg.detect_every
        else:
            self._since_detect += 1
        self._first = False

        # landmarks: one batch for every crop that is new or moved
        k = self.landmarker.scheme.num_points
        raw = np.zeros((len(tracks), k, 2), np.float32)
        if pts is not None:
            raw[:n] = pts
        todo = np.flatnonzero(recompute & alive & (_side(crop) >= cfg.min_side)) if len(tracks) else np.zeros(0, int)
        if len(todo):
            raw[todo] = self.landmarker.landmarks_in_boxes(image, crop[todo])
            if cfg.calibrate and detect:
                on_detection = todo[from_det[todo]]
                self._calibrate(crop[on_detection], raw[on_detection])
        alive &= _side(crop) >= cfg.min_side

        # update the tracks, end those that left, shrank or duplicate an older one
        boxes = np.zeros((len(tracks), 4), np.float64)
        for i, t in enumerate(tracks):
            if not alive[i]:
                continue
            boxes[i] = self._box_of(raw[i])
            t.unsure = not bool(self._consistent(boxes[i][None], crop[i][None])[0])
            if t.unsure:  # the landmarks disagree with the box they were found in: keep that box, detect next frame
                boxes[i] = crop[i]
            c = _centre(boxes[i])[0]
            if not (0 <= c[0] < w and 0 <= c[1] < h) or _side(boxes[i])[0] < cfg.min_side:
                alive[i] = False
                log.debug("frame %d: track %d left the frame or shrank below min_side: ended", idx, t.track_id)
        live = np.flatnonzero(alive)
        if len(live) > 1:
            iou = box_iou(boxes[live], boxes[live])
            for a in range(len(live)):  # tracks are oldest first: a younger duplicate ends
                if alive[live[a]]:
                    for b in range(a + 1, len(live)):
                        if alive[live[b]] and iou[a, b] >= cfg.duplicate_iou:
                            alive[live[b]] = False
                            log.debug("frame %d: track %d duplicates track %d: ended", idx, tracks[live[b]].track_id,
                                      tracks[live[a]].track_id)
        faces: list[TrackedFace] = []
        kept: list[_Track] = []
        for i, t in enumerate(tracks):
            if not alive[i]:
                continue
            # the crop's motion estimate always uses the smoothed points (no noise fed back into the crop), so
            # the tracking, and the network's points, are the same whether or not the output is smoothed
            smoothed = t.smoother(raw[i], time)
            out = smoothed if self.smoothing.enabled else raw[i]
            t.landmarks = out
            box = boxes[i] if t.unsure else self._box_of(out)
            centre = _centre(box if t.unsure or self.smoothing.enabled else self._box_of(smoothed))[0]
            move = centre - t.centre if t.centre is not None and not t.unsure else np.zeros(2)
            # the next frame's crop: the network's own points (smoothed ones lag a moving face), moved on; kept as
            # this frame's crop while that is within the hold (a still face keeps one crop)
            nxt = boxes[i] + np.tile(cfg.motion * move, 2)
            t.box = crop[i].copy() if not t.unsure and self._within_hold(nxt, crop[i]) else nxt
            t.centre, t.age = centre, t.age + 1
            faces.append(TrackedFace(t.track_id, box.astype(np.float32), t.score, out, bool(detected[i]), raw[i]))
            kept.append(t)
        self._tracks = kept
        self.frames += 1
        return FrameResult(index=idx, time=time, faces=faces, detector=bool(detect))

    def track(self, frames: Iterable[np.ndarray], fps: float | None = None, start: int = 0, step: int = 1) -> Iterator[FrameResult]:
        """Track faces through a sequence of frames (starts a new video: :meth:`reset`).

        Args:
            frames: ``(H, W, 3) uint8`` RGB frames, e.g. ``open_clip(path).frames``.
            fps: frame rate of the SOURCE in Hz (default: the instance's).
            start: source index of the first frame.
            step: source frames per given frame (every ``step``-th source frame is given).
        Yields:
            one :class:`FrameResult` per frame, ``index = start + k * step``, ``time = index / fps``.
        """
        src_fps = float(fps or self.fps)
        self.reset(fps=src_fps / max(1, int(step)))
        for k, frame in enumerate(frames):
            i = start + k * int(step)
            yield self.step(frame, timestamp=i / src_fps, index=i)
