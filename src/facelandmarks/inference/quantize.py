"""An int8 landmark network for ONNX Runtime on the CPU: static post-training quantisation of the backbone.

:func:`quantize_onnx` exports a checkpoint the way :func:`facelandmarks.inference.onnx_runtime.export_onnx` does,
with the input normalisation folded into the first convolution, and quantises it with ONNX Runtime's own
quantiser (``onnxruntime.quantization.quantize_static``, QDQ format): weights int8 per output channel,
activations uint8 with ranges from the minimum and maximum seen on real training crops (MinMax calibration).
The backbone's and the heatmap head's convolutions, additions and activations are quantised; the head's output
layer (the heatmap logits) and the soft-argmax decoder stay float32. How that choice was made (validation NME of
the champion, flip test, crops protocol): on the first champion (300-W / InfAnFace, 177 / 29 faces) float
4.01 / 9.18 %, backbone int8 4.01 / 9.17 %, backbone + head without the output layer 4.03 / 9.19 %, everything
int8 4.22 / 9.33 %. The head was first left float; on 2026-12-08, with the runtime's chunks of 4 images
(:class:`~facelandmarks.inference.onnx_runtime.OnnxLandmarkNetwork`), quantising it measured 0.87x the time per
face at batch 32 in one pass, 0.93x with the flip test and 0.96x at batch 1 (paired rounds on 2 threads, demo
crops), for 300-W / InfAnFace / YouTube-Faces / caricature validation NME 3.83 / 9.77 / 5.88 / 7.22 % against
3.79 / 9.75 / 5.88 / 7.19 % with the backbone alone (float: 3.77 / 9.67 / 5.90 / 7.16 %; 177 / 29 / 645 / 7
faces), so it is taken: the int8 file is the option for speed. ``benchmarks/quantization.py`` measures the file on
the test split against the float network, and its speed.

The result is an ordinary exported landmark network (same output and metadata, plus
``facelandmarks.quantization``), except that it takes the ``uint8`` crops themselves (:func:`uint8_input`: the
first quantisation step is the identity on [0, 255] pixels, so it is removed), and
``FaceLandmarker.load("model.int8.onnx", runtime="onnx")`` runs it. (A 2026-12-07 check of the same head
quantisation, one pass: 300-W / InfAnFace / YouTube-Faces val 3.95 / 10.48 / 6.00 % -> 3.97 / 10.48 / 6.00 %,
5 % less time per image on one thread, but no faster at batch 1 with the flip test then, 2.11 vs 2.06 ms.)
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

__all__ = ["QUANTIZED_OPS", "calibration_crops", "quantize_onnx", "uint8_input"]

#: ONNX operators of the backbone and the head that are quantised (everything else stays float32).
QUANTIZED_OPS = ("Conv", "Add", "Clip", "Relu", "Concat")
#: Node-name prefixes of the quantised parts in the exported graph (``torch.onnx.export`` scope names).
QUANTIZED_SCOPES = ("/backbone/", "/head/")
#: Node-name prefixes kept float32 inside those parts: the heatmap head's output layer, whose logits go to the
#: soft-argmax (quantising it too cost 300-W validation 0.2 points, see the module docstring).
FLOAT_SCOPES = ("/head/out",)
#: ONNX operators that only move or pick input values (the NHWC -> NCHW transpose): on integer pixels they give
#: the same values in uint8 as in float32.
LAYOUT_OPS = ("Transpose", "Slice", "Concat", "Gather", "Identity")


def _pixel_tensors(graph: Any) -> set[str]:
    """Names of the graph input and of every tensor computed from it by :data:`LAYOUT_OPS` alone (data input)."""
    derived = {graph.input[0].name}
    grew = True
    while grew:
        grew = False
        for node in graph.node:
            if node.op_type in LAYOUT_OPS and node.input and node.input[0] in derived:
                new = [o for o in node.output if o not in derived]
                derived.update(new)
                grew = grew or bool(new)
    return derived


def _first_layer_input(graph: Any) -> str:
    """The pixel tensor (:func:`_pixel_tensors`) the network's first computing node reads.

    Raises:
        ValueError: no node, or more than one tensor, reads the pixels outside the layout ops.
    """
    pixels = _pixel_tensors(graph)
    read = {i for n in graph.node if n.op_type not in LAYOUT_OPS and n.op_type != "Shape" for i in n.input if i in pixels}
    if len(read) != 1:
        raise ValueError(f"expected one pixel tensor read by the network, found {sorted(read)}")
    return read.pop()


def uint8_input(proto: Any) -> bool:
    """Make a quantised landmark network take ``uint8`` crops, in place, when that changes no output.

    The exported graph takes ``(B, S, S, 3) float32`` pixels in ``[0, 255]``, transposes them, then its first
    layer quantises them to ``uint8`` with scale 1 and zero point 0 (:func:`quantize_onnx` sets that range). On
    integer pixels that quantisation is the identity, so the graph can take the ``uint8`` crops themselves: the
    layout op then moves a quarter of the bytes, the caller skips the cast to float, and the ``QuantizeLinear``
    node is dropped. Outputs are bit for bit those of the float-input graph for any ``uint8`` crops
    (tests/test_inference_onnx.py).

    Args:
        proto: a quantised ``onnx.ModelProto`` (QDQ format) from ``quantize_static``.
    Returns:
        True when rewritten; False (the graph unchanged) when the pixels are not quantised by one
        ``QuantizeLinear`` with scale 1 and ``uint8`` zero point 0.
    """
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    pixels = _pixel_tensors(graph)
    readers = [n for n in graph.node if n.op_type not in LAYOUT_OPS and n.op_type != "Shape"
               and any(i in pixels for i in n.input)]
    if len(readers) != 1 or readers[0].op_type != "QuantizeLinear" or len(readers[0].input) < 3:
        return False
    quant = readers[0]
    init = {t.name: t for t in graph.initializer}
    if quant.input[1] not in init or quant.input[2] not in init:
        return False
    scale, zero = (numpy_helper.to_array(init[n]) for n in quant.input[1:3])
    if scale.size != 1 or float(scale) != 1.0 or zero.dtype != np.uint8 or int(zero) != 0:
        return False
    if any(out.name == quant.output[0] for out in graph.output):
        return False  # not a network graph
    graph.node.remove(quant)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == quant.output[0]:
                node.input[k] = quant.input[0]
    graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.UINT8
    kept = [v for v in graph.value_info if v.name not in pixels]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return True


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
        flip_test: the stored config's flip test (None: as the checkpoint's ``model.flip_test``); the runtime runs
            the mirrored pass around the one-pass graph, so the mirror images are calibrated on too.
        batch_size: images per calibration run.
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

    # the graph is one pass; under the flip test the runtime also feeds it the mirror images: calibrate on both
    images = np.concatenate([crops, crops[:, :, ::-1]]) if config.flip_test else crops

    class _Crops(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"crops": images[i : i + batch_size].astype(np.float32)}
                                 for i in range(0, len(images), batch_size)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    settings = {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8", "calibration": "MinMax",
                "calibration_crops": int(len(crops)),
                "quantized": f"backbone and head {'/'.join(QUANTIZED_OPS)}, not the heatmap output layer",
                "input_normalisation": "folded into the first convolution", "onnxruntime": _ort_version()}
    with tempfile.TemporaryDirectory(prefix="fl-quant-") as tmp:
        float_path, pre_path, q_path = (Path(tmp) / n for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        exported = onnx_graph(model.eval(), config, sha256_file(Path(checkpoint)), opset, fold_normalisation=True)
        float_path.write_bytes(exported)
        meta = {p.key: p.value for p in onnx.load_from_string(exported).metadata_props}
        quant_pre_process(str(float_path), str(pre_path), skip_symbolic_shape=True)
        graph = onnx.load(str(pre_path))
        nodes = [n.name for n in graph.graph.node if n.op_type in QUANTIZED_OPS
                 and n.name.startswith(QUANTIZED_SCOPES) and not n.name.startswith(FLOAT_SCOPES)]
        if not nodes:  # quantize_static reads an empty list as "quantise everything"
            raise ValueError(f"{checkpoint}: no backbone or head node to quantise in the exported graph")
        # pixels are integers in [0, 255]: that range exactly (scale 1, zero point 0), not the calibration crops'
        pixel_range = {_first_layer_input(graph.graph): [{"scale": np.array(1.0, np.float32),
                                                          "zero_point": np.array(0, np.uint8)}]}
        quantize_static(str(pre_path), str(q_path), _Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, nodes_to_quantize=nodes,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"TensorQuantOverrides": pixel_range})
        proto = onnx.load(str(q_path))
    settings["input"] = "uint8 crops" if uint8_input(proto) else "float32 crops"
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
