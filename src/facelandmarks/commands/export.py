"""``facelandmarks export``: the landmark network as ONNX, for ONNX Runtime (see :mod:`facelandmarks.inference.onnx_runtime`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["export"]


def export(
    out: Annotated[Path, typer.Argument(help="the file to write, e.g. model.onnx")],
    model: Annotated[str | None, typer.Option(help="MLflow model URI or checkpoint (default: serve.model_uri of "
                                                   "params.yaml or $FACELANDMARKS_MODEL_URI)")] = None,
    format: Annotated[str, typer.Option("--format", help="onnx (the only format so far)")] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset version")] = 17,
    flip_test: Annotated[bool | None, typer.Option("--flip-test/--no-flip-test",
                                                   help="the mirrored second pass in the graph (default: as trained)")] = None,
) -> None:
    """Export the landmark network (dynamic batch) with its crop settings in the file's metadata.

    Run it with ``FaceLandmarker.load("model.onnx", runtime="onnx")`` or any ONNX runtime: input ``crops``
    ``(B, S, S, 3) float32`` RGB 0-255, output ``landmarks`` ``(B, 68, 2)`` in crop pixels. Exits with 2 when
    the model cannot be found or read.
    """
    from facelandmarks.inference.onnx_runtime import export_onnx
    from facelandmarks.inference.source import ModelSourceError, local_checkpoint
    from facelandmarks.model.checkpoint import CheckpointError
    from facelandmarks.serving.config import load_serve_params

    if format != "onnx":
        raise typer.BadParameter(f"unknown format {format!r}; supported: onnx")
    cfg = load_serve_params()
    uri = model or cfg.model_uri
    try:
        with local_checkpoint(uri, cfg.tracking_uri) as path:
            written = export_onnx(path, out, opset=opset, flip_test=flip_test)
    except (ModelSourceError, CheckpointError) as e:
        typer.echo(f"export: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB) from {uri}")
