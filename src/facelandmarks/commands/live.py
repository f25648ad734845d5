"""``facelandmarks live SOURCE``: track faces on a camera, video file or stream (see :mod:`facelandmarks.video.live`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["live"]


def live(
    source: Annotated[str, typer.Argument(help="camera index (0), video file, or stream URL (rtsp://, http://)")] = "0",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the annotated frames to this video (.mp4, .avi)")] = None,
    jsonl: Annotated[Path | None, typer.Option(help="write one JSON line per frame (track id, box, score, landmarks)")] = None,
    display: Annotated[bool | None, typer.Option(help="show a window (default: when there is a display)")] = None,
    max_frames: Annotated[int, typer.Option(help="stop after this many frames (0: at the end of the source)")] = 0,
    model: Annotated[str | None, typer.Option(help="MLflow model URI or checkpoint (default: serve.model_uri of "
                                                   "params.yaml or $FACELANDMARKS_MODEL_URI)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    smooth: Annotated[bool | None, typer.Option(help="One Euro smoothing (default: params.yaml video.smoothing.enabled)")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default)")] = 0,
) -> None:
    """Track faces and their 68 landmarks live; show them, write them, and print frames per second.

    Press q or Esc in the window to stop. Exits with 2 when the model, params or source cannot be opened.
    """
    from facelandmarks.inference import FaceLandmarker
    from facelandmarks.inference.source import ModelSourceError
    from facelandmarks.media import MediaReadError
    from facelandmarks.model.checkpoint import CheckpointError
    from facelandmarks.serving.config import load_serve_params
    from facelandmarks.video import VideoLandmarker, load_video_params
    from facelandmarks.video.live import run_live

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        cfg = load_serve_params()
        params = load_video_params()
        landmarker = FaceLandmarker.load(model or cfg.model_uri, device=device, tracking_uri=cfg.tracking_uri,
                                           min_score=cfg.detect_min_score, detect_max_side=cfg.detect_max_side or None,
                                           rotate_angles=cfg.detect_rotate_angles)
    except (ModelSourceError, CheckpointError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    if smooth is not None:
        params = params.model_copy(update={"smoothing": params.smoothing.model_copy(update={"enabled": smooth})})
    try:
        run_live(VideoLandmarker(landmarker, params), source, out=out, jsonl=jsonl, display=display,
                 max_frames=max_frames, echo=typer.echo)
    except MediaReadError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
