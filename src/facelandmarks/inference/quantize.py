"""An int8 landmark network for ONNX Runtime on the CPU: static post-training quantisation of the backbone.

:func:`quantize_onnx` exports a checkpoint the way :func:`facelandmarks.inference.onnx_runtime.export_onnx` does,
with the input normalisation folded into the first convolution, and quantises it with ONNX Runtime's own
quantiser (``onnxruntime.quantization.quantize_static``, QDQ format): weights int8 per output channel,
activations uint8 with ranges from the minimum and maximum seen on real training crops (MinMax calibration).
Only the backbone's convolutions, additions and clips are quantised; the heatmap head and the soft-argmax
decoder stay float32. How that choice was made (300-W / InfAnFace validation NME of the champion, flip test,
crops protocol, 177 / 29 faces): float 4.01 / 9.18 %, backbone int8 4.01 / 9.17 %, backbone + head
(without the output layer) 4.03 / 9.19 %, everything int8 4.22 / 9.33 %. ``benchmarks/quantization.py``
measures the file on the test split against the float network, and its speed.

The result is an ordinary exported landmark network (same input, output and metadata, plus
``facelandmarks.quantization``), so ``FaceLandmarker.load("model.int8.onnx", runtime="onnx")`` runs it.
The rounding differs from the float model by design; the agreement is measured, not assumed (a few tenths
of a pixel on 160-px crops).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facelandmarks.fsutil import sha256_file

__all__ = ["QUANTIZED_OPS", "calibration_crops", "quantize_onnx"]

#: ONNX operators of the backbone that are quantised (everything else stays float32).
QUANTIZED_OPS = ("Conv", "Add", "Clip", "Relu", "Concat")
#: Node-name prefix of the backbone in the exported graph (``torch.onnx.export`` scope names).
BACKBONE_SCOPE = "/backbone/"


def calibration_crops(table: str | os.PathLike | pd.DataFrame, size: int, faces: int = 240, seed: int = 0,
                      root: str | os.PathLike = ".", split: str = "train") -> np.ndarray:
    """Real face crops for int8 calibration: a fixed random sample of one split of a crops table.

    The sample is drawn per data set in proportion to its faces (at least one face each), with ``seed``, so
    the same table gives the same crops.

    Args:
        table: ``data/interim/crops.parquet`` (the ``crop`` stage's table: ``crop_path``, ``crop_landmarks``,
            ``visible``, ``face_id``, ``dataset``, ``split``) or the loaded frame.
        size: the model's input size; crops of another size are resized.
        faces: how many crops.
        seed: sampling seed.
        root: the folder the table's ``crop_path`` values are relative to.
        split: the split sampled (``train``: never the faces a model is selected or reported on).
    Returns:
        ``(N, size, size, 3) uint8`` RGB crops, ``N <= faces`` (unreadable crops are logged and skipped).
    Raises:
        FileNotFoundError: ``table`` is a path that does not exist.
        ValueError: the table has no row of ``split``, or no crop could be read (the message names the table).
    """
    from facelandmarks.data.table import read_table
    from facelandmarks.train.dataset import load_faces

    name = "<table>" if isinstance(table, pd.DataFrame) else str(table)
    if not isinstance(table, pd.DataFrame):
        if not Path(table).is_file():
            raise FileNotFoundError(f"{table}: no crops table (run the crop stage: `dvc repro crop`)")
        table = read_table(table)
    rows = table[table["split"] == split]
    if rows.empty:
        raise ValueError(f"{name}: no {split!r} rows to calibrate on")
    share = max(1, faces) / len(rows)
    picked = [g.sample(n=min(len(g), max(1, round(share * len(g)))), random_state=seed)
              for _, g in rows.groupby("dataset", sort=True)]
    sample = pd.concat(picked).sort_values("face_id", kind="stable").head(faces)
    return load_faces(sample, root, "crop_path", "crop_landmarks", size=size).images


def quantize_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, crops: np.ndarray, opset: int = 17,
                  flip_test: bool | None = None, batch_size: int = 16) -> Path:
    """Write an int8 ONNX landmark network calibrated on real crops (written atomically).

    Args:
        checkpoint: a ``model.pt`` written by the training stages (loaded with ``weights_only=True``).
        out: the ``.onnx`` file to write.
        crops: ``(N, S, S, 3) uint8`` calibration crops of the model's input size (:func:`calibration_crops`).
        opset: ONNX opset version (13 or later: per-channel quantisation).
        flip_test: the mirrored second pass in the graph (None: as the checkpoint's ``model.flip_test``).
        batch_size: crops per calibration run.
    Returns:
        the written path; its metadata holds the model config, the checkpoint's sha256 and
        ``facelandmarks.quantization`` (settings and the calibration crops' count).
    Raises:
        facelandmarks.model.checkpoint.CheckpointError: the checkpoint is missing or not readable.
        ValueError: no calibration crops, or crops of the wrong shape or type.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from facelandmarks.fsutil import atomic_path
    from facelandmarks.inference.onnx_runtime import ONNX_QUANT_KEY, onnx_graph
    from facelandmarks.model.checkpoint import load_checkpoint

    model, config = load_checkpoint(checkpoint, map_location="cpu")
    if flip_test is not None:
        config = config.model_copy(update={"flip_test": bool(flip_test)})
    crops = np.asarray(crops)
    s = int(config.input_size)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (s, s, 3) or len(crops) == 0:
        raise ValueError(f"calibration crops must be (N, {s}, {s}, 3) uint8 with N > 0, got {crops.shape} {crops.dtype}")

    class _Crops(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"crops": crops[i : i + batch_size].astype(np.float32)}
                                 for i in range(0, len(crops), batch_size)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    settings = {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8", "calibration": "MinMax",
                "calibration_crops": int(len(crops)), "quantized": f"backbone {'/'.join(QUANTIZED_OPS)}",
                "input_normalisation": "folded into the first convolution", "onnxruntime": _ort_version()}
    with tempfile.TemporaryDirectory(prefix="fl-quant-") as tmp:
        float_path, pre_path, q_path = (Path(tmp) / n for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        exported = onnx_graph(model.eval(), config, sha256_file(Path(checkpoint)), opset, fold_normalisation=True)
        float_path.write_bytes(exported)
        meta = {p.key: p.value for p in onnx.load_from_string(exported).metadata_props}
        quant_pre_process(str(float_path), str(pre_path), skip_symbolic_shape=True)
        graph = onnx.load(str(pre_path))
        nodes = [n.name for n in graph.graph.node if n.name.startswith(BACKBONE_SCOPE) and n.op_type in QUANTIZED_OPS]
        if not nodes:  # quantize_static reads an empty list as "quantise everything"
            raise ValueError(f"{checkpoint}: no backbone node to quantise in the exported graph")
        quantize_static(str(pre_path), str(q_path), _Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, nodes_to_quantize=nodes,
                        calibrate_method=CalibrationMethod.MinMax)
        proto = onnx.load(str(q_path))
    meta[ONNX_QUANT_KEY] = json.dumps(settings, sort_keys=True)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    out = Path(out)
    with atomic_path(out) as tmp_out:
        tmp_out.write_bytes(proto.SerializeToString())
    return out


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)
