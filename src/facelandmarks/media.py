"""Animated media: read the frames of a GIF or a short video within limits, write an animated GIF.

Frames are read lazily (a generator) so that a long 1080p video never sits in memory whole. Source
frames are skipped to reach at most ``fps`` frames per second, and at most ``max_frames`` frames are
kept (a longer clip is cut, and says so). The frame size is checked against ``max_pixels`` from the
header before any frame is decoded (decompression-bomb guard).

GIFs and other Pillow formats (animated PNG/WebP, still photos as one frame) are read with Pillow;
videos (MP4, AVI, MOV, WebM, ... whatever the OpenCV build's FFmpeg reads) with ``cv2.VideoCapture``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageSequence
from pydantic import Field

from facelandmarks.io.images import DEFAULT_MAX_PIXELS, ImageReadError, decode_image, to_rgb_uint8
from facelandmarks.params import StrictModel

__all__ = [
    "MediaLimits",
    "MediaReadError",
    "MediaTooLargeError",
    "Clip",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "media_kind",
    "decode_photo",
    "open_clip",
    "resize_max_side",
    "write_gif",
    "gif_bytes",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


class MediaReadError(ImageReadError):
    """Not a readable GIF or video, or over a limit; the message names the source and the reason."""


class MediaTooLargeError(MediaReadError):
    """A photo, GIF or video whose frames have more pixels than allowed (decompression-bomb guard)."""


class MediaLimits(StrictModel):
    """Limits on photos, GIFs and videos (params.yaml ``serve.limits``).

    Attributes:
        max_pixels: largest width x height of a photo or frame (larger ones are refused).
        max_frames: frames kept from a GIF or video (a longer clip is cut).
        fps: frames per second kept (source frames are skipped to reach it).
        max_side: longer side of annotated GIF frames in pixels (frames are shrunk after landmarking).
        max_upload_mb: largest upload the service accepts, in MiB.
    """

    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    max_frames: int = Field(48, ge=1)
    fps: float = Field(8.0, gt=0)
    max_side: int = Field(480, ge=16)
    max_upload_mb: float = Field(64.0, gt=0)


@dataclass
class Clip:
    """An opened GIF or video.

    Attributes:
        frames: generator of ``(H, W, 3) uint8`` RGB frames (at most ``max_frames``; consume once).
        width, height: frame size in pixels.
        source_fps: frames per second of the source.
        source_frames: frames in the source (-1 when the container does not say).
        step: every ``step``-th source frame is kept.
        fps: frames per second of the kept frames (``source_fps / step``).
        kind: ``"gif"`` (Pillow formats) or ``"video"``.
        max_frames: the limit the frames are cut at.
    """

    frames: Iterator[np.ndarray]
    width: int
    height: int
    source_fps: float
    source_frames: int
    step: int
    fps: float
    kind: str
    max_frames: int

    @property
    def truncated(self) -> bool:
        """Whether frames past ``max_frames`` were left out (known from the source frame count)."""
        return self.source_frames > 0 and self.step * self.max_frames < self.source_frames


def decode_photo(data: bytes, name: str = "<upload>", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a user's photo (upload or file) with its EXIF orientation applied.

    Landmarks of user photos are returned in the frame a viewer sees, so the EXIF rotation is applied
    (data set photos are read WITHOUT it: :func:`facelandmarks.io.images.read_image`). Grayscale, RGBA,
    palette and 16-bit photos are converted to 8-bit RGB.

    Args:
        data: the encoded file.
        name: used in error messages.
        max_pixels: largest width x height accepted; the size is read from the header before decoding.
    Returns:
        ``(H, W, 3) uint8`` RGB.
    Raises:
        MediaTooLargeError: more pixels than ``max_pixels`` (or a Pillow decompression-bomb refusal).
        facelandmarks.io.images.ImageReadError: not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:
        raise MediaTooLargeError(f"{name}: {e}") from e
    except Exception:
        pass  # not an image: decode_image below says so
    else:
        if w * h > max_pixels:
            raise MediaTooLargeError(f"{name}: image of {w}x{h} pixels exceeds the limit of {max_pixels} pixels")
    return decode_image(data, source=name, max_pixels=max_pixels, apply_exif=True)


def media_kind(path: str | os.PathLike) -> str | None:
    """``"image"``, ``"gif"`` or ``"video"`` by file suffix; None for anything else."""
    s = Path(path).suffix.lower()
    if s == ".gif":
        return "gif"
    if s in IMAGE_SUFFIXES:
        return "image"
    if s in VIDEO_SUFFIXES:
        return "video"
    return None


def _step(source_fps: float, fps: float) -> int:
    return max(1, int(round(source_fps / fps))) if source_fps > 0 else 1


def _open_pillow(src: str | BinaryIO, name: str, limits: MediaLimits) -> Clip | None:
    try:
        im = Image.open(src)
    except Image.DecompressionBombError as e:
        raise MediaTooLargeError(f"{name}: {e}") from e
    except Exception:
        return None
    w, h = im.size
    if w * h > limits.max_pixels:
        im.close()
        raise MediaTooLargeError(f"{name}: frames of {w}x{h} pixels exceed the limit of {limits.max_pixels} pixels")
    n = int(getattr(im, "n_frames", 1))
    durations = []
    try:
        for k in range(min(n, 50)):
            im.seek(k)
            durations.append(im.info.get("duration") or 100)
        im.seek(0)
    except Exception as e:
        im.close()
        raise MediaReadError(f"{name}: not a readable animation ({type(e).__name__}: {e})") from e
    source_fps = 1000.0 / float(np.mean(durations)) if durations else 10.0
    step = _step(source_fps, limits.fps)

    def frames() -> Iterator[np.ndarray]:
        kept = 0
        try:
            for k, frame in enumerate(ImageSequence.Iterator(im)):
                if k % step:
                    continue
                yield to_rgb_uint8(np.asarray(frame.convert("RGB")), name)
                kept += 1
                if kept >= limits.max_frames:
                    break
        except MediaReadError:
            raise
        except Exception as e:
            raise MediaReadError(f"{name}: broken frame ({type(e).__name__}: {e})") from e
        finally:
            im.close()

    return Clip(frames(), w, h, source_fps, n, step, source_fps / step, "gif", limits.max_frames)


def _open_video(path: str, name: str, limits: MediaLimits) -> Clip | None:
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        return None
    w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if w <= 0 or h <= 0:
        cap.release()
        return None
    if w * h > limits.max_pixels:
        cap.release()
        raise MediaTooLargeError(f"{name}: frames of {w}x{h} pixels exceed the limit of {limits.max_pixels} pixels")
    source_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    source_fps = source_fps if 0 < source_fps < 1000 else 25.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or -1)
    step = _step(source_fps, limits.fps)

    def frames() -> Iterator[np.ndarray]:
        kept = 0
        k = 0
        try:
            while kept < limits.max_frames:
                if k % step == 0:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    kept += 1
                elif not cap.grab():
                    break
                k += 1
        finally:
            cap.release()

    return Clip(frames(), w, h, source_fps, n if n > 0 else -1, step, source_fps / step, "video", limits.max_frames)


def open_clip(path: str | os.PathLike, limits: MediaLimits | None = None, name: str | None = None) -> Clip:
    """Open a GIF, an animated image, a still photo (one frame) or a video.

    Args:
        path: the file.
        limits: frame, rate and size limits (defaults when None).
        name: name used in error messages (default: the path).
    Returns:
        a :class:`Clip` whose ``frames`` generator yields at most ``limits.max_frames`` frames.
    Raises:
        MediaReadError: missing file, not a readable GIF/image/video, or frames over ``max_pixels``.
    """
    limits = limits or MediaLimits()
    p = Path(path)
    name = name or str(p)
    if not p.is_file():
        raise MediaReadError(f"{name}: no such file")
    clip = _open_pillow(str(p), name, limits)
    if clip is None:
        clip = _open_video(str(p), name, limits)
    if clip is None:
        raise MediaReadError(f"{name}: not a readable image, GIF or video")
    return clip


def resize_max_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink an image so that its longer side is at most ``max_side`` (area interpolation); never enlarges."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def write_gif(frames: Sequence[np.ndarray], out: str | os.PathLike | BinaryIO, fps: float) -> None:
    """Write frames as a looping animated GIF (Pillow, one adaptive palette per frame).

    Args:
        frames: ``(H, W, 3) uint8`` RGB frames of one size.
        out: file path (written atomically) or a binary file object.
        fps: frames per second (GIF delays are whole 10 ms units).
    Raises:
        ValueError: no frames, or frames of different sizes.
    """
    if not len(frames):
        raise ValueError("write_gif: no frames")
    size = frames[0].shape[:2]
    if any(f.shape[:2] != size for f in frames):
        raise ValueError("write_gif: frames of different sizes")
    images = [Image.fromarray(np.ascontiguousarray(f)).quantize(colors=256, method=Image.Quantize.MEDIANCUT) for f in frames]
    duration = max(20, int(round(1000.0 / fps / 10.0)) * 10)
    kwargs = dict(format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=True)
    if isinstance(out, (str, os.PathLike)):
        from facelandmarks.fsutil import atomic_path

        with atomic_path(out) as tmp:
            images[0].save(tmp, **kwargs)
    else:
        images[0].save(out, **kwargs)


def gif_bytes(frames: Sequence[np.ndarray], fps: float) -> bytes:
    """:func:`write_gif` into memory."""
    buf = io.BytesIO()
    write_gif(frames, buf, fps)
    return buf.getvalue()
