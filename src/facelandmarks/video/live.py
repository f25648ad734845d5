"""The live loop of ``facelandmarks live``: a camera, a video file or a stream through the tracker.

Frames are read with OpenCV's ``VideoCapture`` (a camera index such as ``0``, a file, or a stream URL
such as ``rtsp://...`` / ``http://...``, whatever the OpenCV build's FFmpeg opens), tracked with
:class:`facelandmarks.video.VideoLandmarker`, drawn, shown in a window when there is a display, and
optionally written to a video file (``cv2.VideoWriter``) and a JSON-lines file. Frames per second of
processing are printed about once a second and at the end (wall clock: only the printed speed depends
on it, never the landmarks).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2

from facelandmarks.media import MediaReadError
from facelandmarks.video.clips import draw_tracked
from facelandmarks.video.tracker import VideoLandmarker, frame_record

__all__ = ["LiveStats", "display_available", "open_capture", "run_live"]

log = logging.getLogger(__name__)

#: FourCC per output suffix (OpenCV's FFmpeg writer; mp4v needs no external encoder).
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


@dataclass
class LiveStats:
    """What a live run did.

    Attributes:
        frames: frames processed.
        faces: faces over all frames.
        tracks: distinct track ids.
        detector_runs: frames on which MTCNN ran.
        seconds: wall time of the loop (reading, tracking, drawing, showing, writing).
        fps: ``frames / seconds``.
        displayed: whether frames were shown in a window.
        out: the annotated video written, if any.
    """

    frames: int = 0
    faces: int = 0
    tracks: int = 0
    detector_runs: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    displayed: bool = False
    out: Path | None = None


def open_capture(source: str | int) -> tuple[cv2.VideoCapture, bool]:
    """Open a camera, file or stream.

    Args:
        source: a camera index (``0`` or ``"0"``), a video file path, or a stream URL.
    Returns:
        ``(capture, is_camera)``.
    Raises:
        MediaReadError: it cannot be opened (the message names the source).
    """
    text = str(source)
    is_camera = text.isdigit()
    if not is_camera and "://" not in text and not Path(text).is_file():
        raise MediaReadError(f"{text}: no such file (give a camera index such as 0, a video file or a stream URL)")
    cap = cv2.VideoCapture(int(text)) if is_camera else cv2.VideoCapture(text)
    if not cap.isOpened():
        cap.release()
        kind = "camera" if is_camera else "video file or stream"
        raise MediaReadError(f"{text}: cannot open this {kind} with OpenCV")
    return cap, is_camera


def display_available() -> bool:
    """Whether a window can be shown: a display is there and OpenCV was built with a GUI backend
    (``opencv-python-headless`` has none)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("facelandmarks live", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("facelandmarks live")
    except cv2.error:
        return False
    return True


def run_live(
    video: VideoLandmarker,
    source: str | int,
    out: str | os.PathLike | None = None,
    jsonl: str | os.PathLike | None = None,
    display: bool | None = None,
    max_frames: int = 0,
    echo: Callable[[str], None] = print,
    report_every_s: float = 1.0,
) -> LiveStats:
    """Track faces on a camera, file or stream until it ends, ``max_frames`` are done, or q / Esc is pressed.

    Args:
        video: the tracker (reset here).
        source: see :func:`open_capture`.
        out: annotated video file to write (``.mp4``, ``.avi``, ...; written atomically when the loop ends).
        jsonl: JSON-lines file of the frames' faces (:func:`facelandmarks.video.frame_record`), atomic too.
        display: show a window (None: when :func:`display_available`; True where there is none: a
            warning, and the loop runs without a window).
        max_frames: stop after this many frames (0: at the end of the source).
        echo: where the frames-per-second lines go.
        report_every_s: seconds between two frames-per-second lines.
    Returns:
        :class:`LiveStats`.
    Raises:
        MediaReadError: the source cannot be opened, or the output video cannot be written.
    """
    if out and Path(out).suffix.lower() not in FOURCC:
        raise MediaReadError(f"{out}: unknown video type {Path(out).suffix!r}; use one of {sorted(FOURCC)}")
    cap, is_camera = open_capture(source)
    src_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    src_fps = src_fps if 0 < src_fps < 1000 else 30.0
    video.reset(fps=src_fps)
    show = display_available() if display is None or display else False
    if display and not show:
        echo("live: no display here (or OpenCV without a GUI, e.g. opencv-python-headless): not showing frames")
    stats = LiveStats(displayed=show, out=Path(out) if out else None)
    writer: cv2.VideoWriter | None = None
    ids: set[int] = set()
    try:
        with _maybe_atomic(out) as out_tmp, _maybe_atomic(jsonl) as jsonl_tmp:
            lines = open(jsonl_tmp, "w") if jsonl_tmp else None
            t0 = last_report = time.perf_counter()
            last_frames = 0
            last_t = -1.0
            try:
                while not max_frames or stats.frames < max_frames:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    t = stats.frames / src_fps
                    if is_camera:  # a camera's own clock, when it has one (dropped frames keep true time steps)
                        ms = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
                        t = ms / 1000.0 if ms > 0 and ms / 1000.0 > last_t else t
                    last_t = t
                    result = video.step(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), timestamp=t, index=stats.frames)
                    stats.frames += 1
                    stats.faces += len(result.faces)
                    ids.update(f.track_id for f in result.faces)
                    if lines is not None:
                        lines.write(json.dumps(frame_record(result), separators=(",", ":")) + "\n")
                    if show or out_tmp:
                        drawn = cv2.cvtColor(draw_tracked(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), result.faces,
                                                          video.landmarker.scheme), cv2.COLOR_RGB2BGR)
                        if out_tmp:
                            if writer is None:
                                writer = _writer(out_tmp, Path(out), src_fps, drawn.shape[1], drawn.shape[0])
                            writer.write(drawn)
                        if show:
                            cv2.imshow("facelandmarks live", drawn)
                            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                                break
                    now = time.perf_counter()
                    if now - last_report >= report_every_s:
                        echo(f"live: frame {stats.frames}, {(stats.frames - last_frames) / (now - last_report):.1f} fps, "
                             f"{len(result.faces)} faces")
                        last_report, last_frames = now, stats.frames
            finally:
                if lines is not None:
                    lines.close()
                if writer is not None:
                    writer.release()
            stats.seconds = time.perf_counter() - t0
            if out_tmp and writer is None:
                raise MediaReadError(f"{source}: no frame could be read, so no video was written")
    finally:
        cap.release()
        if show:
            cv2.destroyAllWindows()
    stats.tracks = len(ids)
    stats.detector_runs = video.detector_runs
    stats.fps = stats.frames / stats.seconds if stats.seconds > 0 else 0.0
    echo(f"live: {stats.frames} frames in {stats.seconds:.1f} s, {stats.fps:.1f} fps; {stats.faces} faces, "
         f"{stats.tracks} tracks, detector on {stats.detector_runs} frames" + (f"; wrote {out}" if out else ""))
    return stats


class _maybe_atomic:
    """``atomic_path(path)`` when a path is given, else a context yielding None."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        from facelandmarks.fsutil import atomic_path

        self._cm = atomic_path(path) if path else None

    def __enter__(self) -> Path | None:
        return self._cm.__enter__() if self._cm else None

    def __exit__(self, *exc) -> bool:
        return bool(self._cm.__exit__(*exc)) if self._cm else False


def _writer(tmp: Path, out: Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    code = FOURCC.get(out.suffix.lower())
    if code is None:
        raise MediaReadError(f"{out}: unknown video type {out.suffix!r}; use one of {sorted(FOURCC)}")
    w = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*code), fps, (width, height))
    if not w.isOpened():
        raise MediaReadError(f"{out}: OpenCV cannot write a {code} video here")
    return w
