"""Tracked clips: a GIF or video through :class:`VideoLandmarker`, drawn, and written as JSON lines.

What ``facelandmarks predict`` (videos and GIFs), ``POST /annotate_gif`` and ``facelandmarks live`` share.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facelandmarks.draw import draw_faces
from facelandmarks.media import Clip, MediaReadError, resize_max_side
from facelandmarks.schemes import LandmarkScheme
from facelandmarks.video.tracker import (
    FrameResult,
    TrackedFace,
    VideoLandmarker,
    frame_record,
)

__all__ = ["TrackedClip", "draw_tracked", "track_clip", "tracks_summary", "write_jsonl"]


def draw_tracked(image: np.ndarray, faces: list[TrackedFace], scheme: LandmarkScheme) -> np.ndarray:
    """Draw tracked faces (box, landmarks and ``#<track id>`` above the box) on a copy of a frame.

    Args:
        image: ``(H, W, 3) uint8`` RGB frame.
        faces: the frame's :class:`TrackedFace` list.
        scheme: landmark scheme (contours drawn by its groups).
    Returns:
        ``(H, W, 3) uint8`` RGB copy.
    """
    out = draw_faces(image, faces, scheme, draw_score=False)
    for f in faces:
        side = float(f.box[2] - f.box[0])
        scale = max(0.35, min(1.2, side / 160.0))
        org = (int(round(f.box[0])), max(0, int(round(f.box[1])) - 4))
        cv2.putText(out, f"#{f.track_id}", org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(out, f"#{f.track_id}", org, cv2.FONT_HERSHEY_SIMPLEX, scale, (60, 160, 255), 1, cv2.LINE_AA)
    return out


@dataclass
class TrackedClip:
    """A clip with faces tracked through its kept frames.

    Attributes:
        results: one :class:`FrameResult` per kept frame (source frame index, time, faces in SOURCE pixels).
        frames: drawn ``(h, w, 3) uint8`` RGB frames shrunk to ``max_side`` (empty when not drawn).
        fps: frames per second of the kept frames.
        source_fps: frames per second of the source.
        width, height: source frame size.
        step: every ``step``-th source frame was kept.
        truncated: frames past the frame limit were left out.
        detector_runs: kept frames on which MTCNN ran.
    """

    results: list[FrameResult] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    fps: float = 10.0
    source_fps: float = 10.0
    width: int = 0
    height: int = 0
    step: int = 1
    truncated: bool = False
    detector_runs: int = 0


def track_clip(video: VideoLandmarker, clip: Clip, max_side: int = 480, draw: bool = True) -> TrackedClip:
    """Track faces through every kept frame of a clip (and draw them).

    Args:
        video: the tracker (reset here: a new video).
        clip: from :func:`facelandmarks.media.open_clip`.
        max_side: longer side of the drawn frames in pixels.
        draw: keep drawn frames (for a GIF); only the results otherwise.
    Returns:
        :class:`TrackedClip`.
    Raises:
        facelandmarks.media.MediaReadError: a frame cannot be decoded, or the clip has no frame.
    """
    out = TrackedClip(fps=clip.fps, source_fps=clip.source_fps, width=clip.width, height=clip.height,
                      step=clip.step, truncated=clip.truncated)
    for frame, result in _pairs(video, clip):
        out.results.append(result)
        if draw:
            out.frames.append(resize_max_side(draw_tracked(frame, result.faces, video.landmarker.scheme), max_side))
    if not out.results:
        raise MediaReadError("the clip has no readable frame")
    out.detector_runs = video.detector_runs
    return out


def _pairs(video: VideoLandmarker, clip: Clip) -> Iterable[tuple[np.ndarray, FrameResult]]:
    video.reset(fps=clip.fps)
    for k, frame in enumerate(clip.frames):
        i = k * clip.step
        yield frame, video.step(frame, timestamp=i / clip.source_fps, index=i)


def tracks_summary(results: list[FrameResult]) -> list[dict[str, Any]]:
    """Per track: ``{"track", "first", "last" (source frame indices), "frames" (frames it is in)}``, by id."""
    seen: dict[int, dict[str, Any]] = {}
    for r in results:
        for f in r.faces:
            s = seen.setdefault(f.track_id, {"track": f.track_id, "first": r.index, "last": r.index, "frames": 0})
            s["last"] = r.index
            s["frames"] += 1
    return [seen[k] for k in sorted(seen)]


def write_jsonl(path: str | os.PathLike, results: Iterable[FrameResult], decimals: int = 2) -> None:
    """Write one JSON line per frame (:func:`facelandmarks.video.tracker.frame_record`), atomically.

    Args:
        path: the ``.jsonl`` file (parent folders created).
        results: the frames' results, in order.
        decimals: decimals of coordinates.
    """
    from facelandmarks.fsutil import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.writelines(json.dumps(frame_record(r, decimals), separators=(",", ":")) + "\n" for r in results)
