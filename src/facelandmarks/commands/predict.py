"""``facelandmarks predict PATH...``: landmarks for photos, folders, GIFs and videos (see :mod:`facelandmarks.predict`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["predict"]


def predict(
    paths: Annotated[list[Path], typer.Argument(help="photos, GIFs, videos or folders of them")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("predictions"),
    model: Annotated[str | None, typer.Option(help="MLflow model URI or checkpoint (default: serve.model_uri of "
                                                   "params.yaml or $FACELANDMARKS_MODEL_URI, i.e. "
                                                   "models:/facelandmarks@champion)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    draw: Annotated[bool, typer.Option(help="write annotated PNGs / GIFs")] = True,
    pts: Annotated[bool, typer.Option(help="write one 300-W .pts file per face of a photo")] = True,
    max_frames: Annotated[int | None, typer.Option(help="frames kept from a GIF or video (default: serve.limits)")] = None,
    fps: Annotated[float | None, typer.Option(help="frames per second kept (default: serve.limits)")] = None,
    smooth: Annotated[bool | None, typer.Option(help="smooth tracked landmarks in GIFs and videos with the One Euro "
                                                        "filter (default: params.yaml video.smoothing.enabled)")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Find faces and their 68 landmarks; write JSON (+ .pts) and annotated images or GIFs.

    Photos: ``x.jpg`` -> ``x.jpg.json``, ``x.jpg.<k>.pts``, ``x.jpg.annotated.png``. GIFs and videos:
    faces are tracked through the frames and smoothed (params.yaml ``video``): ``y.mp4`` ->
    ``y.mp4.jsonl`` (one JSON line per frame), ``y.mp4.json`` and ``y.mp4.annotated.gif``.

    Exits with 1 when some input could not be read (each is reported; the others are still written),
    2 when the model or the params cannot be loaded.
    """
    from facelandmarks.inference import FaceLandmarker
    from facelandmarks.inference.source import ModelSourceError
    from facelandmarks.model.checkpoint import CheckpointError
    from facelandmarks.predict import predict_paths
    from facelandmarks.serving.config import load_serve_params
    from facelandmarks.video.config import load_video_params

    try:
        cfg = load_serve_params()
        video = load_video_params()
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    limits = cfg.limits.model_copy(update={k: v for k, v in {"max_frames": max_frames, "fps": fps}.items() if v is not None})
    uri = model or cfg.model_uri
    try:
        landmarker = FaceLandmarker.load(uri, device=device, tracking_uri=cfg.tracking_uri,
                                           min_score=cfg.detect_min_score, detect_max_side=cfg.detect_max_side or None,
                                           rotate_angles=cfg.detect_rotate_angles)
    except (ModelSourceError, CheckpointError, ValueError) as e:  # ValueError: an .onnx file that is not our export
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    if smooth is not None:
        video = video.model_copy(update={"smoothing": video.smoothing.model_copy(update={"enabled": smooth})})
    result = predict_paths(landmarker, paths, out, limits, draw=draw, pts=pts, progress=progress, video=video)
    typer.echo(f"predict: {result.faces} faces in {result.inputs} inputs; {len(result.written)} files written to {out}"
               + (f"; {len(result.failed)} inputs skipped" if result.failed else ""))
    for path, reason in result.failed:
        typer.echo(f"skipped {path}: {reason}", err=True)
    if result.failed:
        raise typer.Exit(1)
