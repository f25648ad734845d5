"""Landmarks drawn on photos and clips: what ``facelandmarks predict`` and the HTTP service return.

Both the command line and the service call these functions with the same :class:`FaceLandmarker`,
so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelandmarks.draw import draw_faces
from facelandmarks.inference.landmarker import Face, FaceLandmarker
from facelandmarks.media import Clip, resize_max_side

__all__ = ["AnnotatedClip", "annotate_clip", "faces_json", "clip_json"]


def faces_json(faces: list[Face], image_shape: tuple[int, ...] | None = None, scheme: str = "ibug68") -> dict[str, Any]:
    """JSON-ready description of one photo's faces.

    Returns:
        ``{"width": W, "height": H, "scheme": "ibug68", "faces": [Face.to_dict(), ...]}``; coordinates are
        0-based photo pixels (``width``/``height`` left out when ``image_shape`` is None).
    """
    out: dict[str, Any] = {}
    if image_shape is not None:
        out.update(width=int(image_shape[1]), height=int(image_shape[0]))
    out.update(scheme=scheme, faces=[f.to_dict() for f in faces])
    return out


@dataclass
class AnnotatedClip:
    """A clip with landmarks drawn on every kept frame.

    Attributes:
        frames: drawn ``(h, w, 3) uint8`` RGB frames, shrunk to ``max_side`` (ready for a GIF).
        faces: one list of :class:`Face` per kept frame, in the SOURCE frame's pixels.
        fps: frames per second of ``frames``.
        width, height: source frame size.
        truncated: frames past the frame limit were left out.
        step: every ``step``-th source frame was kept.
    """

    frames: list[np.ndarray] = field(default_factory=list)
    faces: list[list[Face]] = field(default_factory=list)
    fps: float = 10.0
    width: int = 0
    height: int = 0
    truncated: bool = False
    step: int = 1


def annotate_clip(landmarker: FaceLandmarker, clip: Clip, max_side: int = 480, chunk: int = 8) -> AnnotatedClip:
    """Find faces in every kept frame of a clip and draw them.

    Frames are processed ``chunk`` at a time (detection and landmarks batched across the chunk), then
    drawn and shrunk, so memory stays bounded by one chunk of full-size frames.

    Args:
        landmarker: the predictor.
        clip: from :func:`facelandmarks.media.open_clip`.
        max_side: longer side of the drawn frames.
        chunk: frames per batch.
    Returns:
        :class:`AnnotatedClip`.
    Raises:
        facelandmarks.media.MediaReadError: a frame cannot be decoded, or the clip has no frame.
    """
    from facelandmarks.media import MediaReadError

    out = AnnotatedClip(fps=clip.fps, width=clip.width, height=clip.height, truncated=clip.truncated, step=clip.step)
    batch: list[np.ndarray] = []

    def flush() -> None:
        for frame, faces in zip(batch, landmarker.predict(batch)):
            out.faces.append(faces)
            out.frames.append(resize_max_side(draw_faces(frame, faces, landmarker.scheme), max_side))
        batch.clear()

    for frame in clip.frames:
        batch.append(frame)
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()
    if not out.frames:
        raise MediaReadError("the clip has no readable frame")
    return out


def clip_json(result: AnnotatedClip, scheme: str = "ibug68") -> dict[str, Any]:
    """JSON-ready description of an annotated clip.

    Returns:
        ``{"width", "height", "fps", "step", "truncated", "scheme", "frames": [{"index": source frame
        index, "faces": [...]}, ...]}``, coordinates in source frame pixels.
    """
    return {
        "width": result.width,
        "height": result.height,
        "fps": round(result.fps, 3),
        "step": result.step,
        "truncated": result.truncated,
        "scheme": scheme,
        "frames": [{"index": i * result.step, "faces": [f.to_dict() for f in faces]} for i, faces in enumerate(result.faces)],
    }
