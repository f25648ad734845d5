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
                                                   help="the flip test, stored in the file and run around the one-pass graph by "
                                                        "FaceLandmarker (default: as trained)")] = None,
    quantize: Annotated[str, typer.Option(help="none (float32) or int8 (backbone and head quantised, calibrated on "
                                               "training crops: about 1.7x faster on the CPU)")] = "none",
    calibration: Annotated[Path, typer.Option(help="crops table whose train split calibrates int8 "
                                                   "(the crop stage's output)")] = Path("data/interim/crops.parquet"),
    calibration_faces: Annotated[int, typer.Option(min=1, help="calibration crops for int8")] = 240,
) -> None:
    """Export the landmark network (dynamic batch) with its crop settings in the file's metadata.

    Run it with ``FaceLandmarker.load("model.onnx", runtime="onnx")`` or any ONNX runtime: input ``crops``
    ``(B, S, S, 3) float32`` RGB 0-255, output ``landmarks`` ``(B, 68, 2)`` in crop pixels of one pass; the flip
    test (``flip_test`` in the stored config) is the caller's, see :mod:`facelandmarks.inference.onnx_runtime`.
    ``--quantize int8`` writes the int8 network of :mod:`facelandmarks.inference.quantize` (input ``uint8``
    crops, same output). Exits with 2 when the model or the calibration crops cannot be found or read.
    """
    from facelandmarks.inference.onnx_runtime import export_onnx
    from facelandmarks.inference.quantize import calibration_crops, quantize_onnx
    from facelandmarks.inference.source import ModelSourceError, local_checkpoint
    from facelandmarks.model.checkpoint import CheckpointError, read_checkpoint
    from facelandmarks.serving.config import load_serve_params

    if format != "onnx":
        raise typer.BadParameter(f"unknown format {format!r}; supported: onnx")
    if quantize not in ("none", "int8"):
        raise typer.BadParameter(f"unknown quantisation {quantize!r}; supported: none, int8")
    cfg = load_serve_params()
    uri = model or cfg.model_uri
    try:
        with local_checkpoint(uri, cfg.tracking_uri) as path:
            if quantize == "int8":
                size = int(read_checkpoint(path)["config"]["input_size"])
                crops = calibration_crops(calibration, size, calibration_faces)
                written = quantize_onnx(path, out, crops, opset=opset, flip_test=flip_test)
            else:
                written = export_onnx(path, out, opset=opset, flip_test=flip_test)
    except (ModelSourceError, CheckpointError, FileNotFoundError, ValueError) as e:
        typer.echo(f"export: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB, {quantize if quantize != 'none' else 'float32'}) "
               f"from {uri}")
