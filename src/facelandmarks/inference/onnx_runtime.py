"""The landmark network as ONNX, run with ONNX Runtime (CPU) instead of PyTorch.

:func:`export_onnx` writes the network of a checkpoint with a dynamic batch axis. The graph takes raw crops,
``(B, S, S, 3) float32`` RGB in [0, 255] (the ``uint8`` crops cast to float; an int8 file of
:mod:`facelandmarks.inference.quantize` takes the ``uint8`` crops themselves), does the model's own input
normalisation, and returns ``(B, K, 2) float32`` landmarks in crop pixels (pixel centres at integers) of ONE
pass. The checkpoint's ``ModelConfig`` (scheme, input size, crop and detector settings, ``flip_test``) and the
checkpoint's sha256 are stored in the file's metadata, so the file alone is enough to cut faces the way the
model was trained (:class:`OnnxLandmarkNetwork`).

The flip test (the mirrored crop through the same network, its points mirrored back with the scheme's flip
permutation, the two averaged) is done by :class:`OnnxLandmarkNetwork` around the graph when the stored config
asks for it (metadata ``facelandmarks.flip_test: runtime``): the upright and mirrored crops then run as separate
calls on separate threads, which uses two cores better than ONNX Runtime's own threads inside each operator
(measured on 2 cores, int8, batch 32: 2.04 vs 2.65 ms per face; ``benchmarks/quantization.py`` measures it).
Another ONNX runtime does the same: run ``crops`` and ``crops[:, :, ::-1]``, then average ``a`` and
``(S - 1 - b.x, b.y)[flip_permutation]``. Files exported before this change hold both passes in the graph (no
``facelandmarks.flip_test`` key) and are run as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from facelandmarks.fsutil import sha256_file

__all__ = ["OnnxLandmarkNetwork", "onnx_graph", "export_onnx", "fold_input_normalisation", "ONNX_CONFIG_KEY",
           "ONNX_QUANT_KEY", "ONNX_FLIP_KEY"]

#: Metadata key holding the ``ModelConfig`` JSON.
ONNX_CONFIG_KEY = "facelandmarks.model_config"
ONNX_SHA_KEY = "facelandmarks.checkpoint_sha256"
#: Metadata key: "true" when the input normalisation is folded into the first convolution.
ONNX_FOLDED_KEY = "facelandmarks.input_normalisation_folded"
#: Metadata key holding the quantisation settings (JSON) of an int8 file (:mod:`facelandmarks.inference.quantize`).
ONNX_QUANT_KEY = "facelandmarks.quantization"
#: Metadata key: "runtime" when the graph is one pass and the runtime does the config's flip test around it.
ONNX_FLIP_KEY = "facelandmarks.flip_test"




def fold_input_normalisation(model: Any) -> Any:
    """A copy of a landmark network that takes raw ``[0, 255]`` pixels: the input normalisation (ImageNet mean
    and std, and the model's own re-normalisation if it has one) folded into the first convolution.

    The per-channel affine map ``x -> a x + b`` is linear, so ``conv(W, a x + b) = conv(W a, x) + sum(W b)``
    except where the convolution reads its zero padding: there the folded layer pads with black (pixel 0)
    where the original padded with the mean colour. That changes only the outermost ring of the first layer's
    output; measured on the champion it moves 300-W validation NME by less than 0.01 points. It saves the two
    element-wise passes over every input pixel, which ONNX Runtime does not fuse (about a tenth of the int8
    network's time, :mod:`facelandmarks.inference.quantize`).

    Args:
        model: a :class:`~facelandmarks.model.network.LandmarkModel` (not modified).
    Returns:
        the folded copy, for ``(B, 3, S, S)`` float inputs in ``[0, 255]``.
    Raises:
        ValueError: the backbone has no 3-channel convolution to fold into, or it has groups or a padding mode
            other than zeros.
    """
    import copy

    import torch

    from facelandmarks.model.preprocess import MEAN, STD

    folded = copy.deepcopy(model).eval()
    stem_name, stem = next(((n, m) for n, m in folded.backbone.named_modules()
                            if isinstance(m, torch.nn.Conv2d) and m.in_channels == 3), (None, None))
    if stem is None or stem.groups != 1 or stem.padding_mode != "zeros":
        raise ValueError(f"{type(model.backbone).__name__}: no plain 3-channel first convolution to fold the input "
                         "normalisation into")
    scale = 1.0 / (torch.tensor(STD, dtype=torch.float32) * 255.0)
    shift = -torch.tensor(MEAN, dtype=torch.float32) / torch.tensor(STD, dtype=torch.float32)
    if getattr(folded, "renormalise", False):
        s2, b2 = folded.input_scale.reshape(3), folded.input_shift.reshape(3)
        scale, shift = scale * s2, shift * s2 + b2
        folded.renormalise = False
    new = torch.nn.Conv2d(3, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, stem.dilation, bias=True)
    with torch.no_grad():
        new.weight.copy_(stem.weight * scale.view(1, 3, 1, 1))
        bias = stem.bias if stem.bias is not None else torch.zeros(stem.out_channels)
        new.bias.copy_(bias + (stem.weight * shift.view(1, 3, 1, 1)).sum(dim=(1, 2, 3)))
    parent = folded.backbone.get_submodule(stem_name.rpartition(".")[0]) if "." in stem_name else folded.backbone
    setattr(parent, stem_name.rpartition(".")[2], new)
    folded.input_normalisation_folded = True
    return folded


def onnx_graph(model: Any, config: Any, checkpoint_sha256: str | None, opset: int = 17,
               fold_normalisation: bool = False) -> bytes:
    """A landmark network as a serialised ONNX model: one pass, dynamic batch; metadata: config, checkpoint hash,
    and ``facelandmarks.flip_test: runtime`` (the flip test is the runtime's, :class:`OnnxLandmarkNetwork`).

    Args:
        model: a :class:`~facelandmarks.model.network.LandmarkModel` (or a module with its ``forward``), on the CPU.
        config: its ``ModelConfig``, stored; ``config.flip_test`` tells the runtime to run the mirrored pass too.
        checkpoint_sha256: the checkpoint's hash, stored in the metadata (None: not stored).
        opset: ONNX opset version.
        fold_normalisation: fold the input normalisation into the first convolution
            (:func:`fold_input_normalisation`: faster, and no longer exactly the PyTorch model at the crop border).
    Returns:
        the ONNX model's bytes (checked with ``onnx.checker``).
    Raises:
        ValueError: ``fold_normalisation`` for a backbone it cannot be folded into.
    """
    import io

    import onnx
    import torch

    from facelandmarks.model.preprocess import MEAN, STD

    if fold_normalisation:
        model = fold_input_normalisation(model)

    class _RawCrops(torch.nn.Module):
        """``(B, S, S, 3)`` float RGB [0, 255] -> the network's ``(B, K, 2)`` crop-pixel landmarks of one pass (a
        module without ``predict`` runs its own ``forward``)."""

        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
            self.folded = bool(getattr(net, "input_normalisation_folded", False))

        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            x = crops.permute(0, 3, 1, 2)
            if not self.folded:
                x = (x - self.mean) / self.std
            if not hasattr(self.net, "predict"):
                return self.net(x)
            return self.net.predict(x, False)

    s = int(config.input_size)
    buf = io.BytesIO()
    torch.onnx.export(
        _RawCrops(model).eval(), (torch.zeros(2, s, s, 3, dtype=torch.float32),), buf, input_names=["crops"],
        output_names=["landmarks"], dynamic_axes={"crops": {0: "batch"}, "landmarks": {0: "batch"}},
        opset_version=opset, dynamo=False,
    )
    proto = onnx.load_from_string(buf.getvalue())
    meta = {ONNX_CONFIG_KEY: config.model_dump_json(), ONNX_FLIP_KEY: "runtime"}
    if checkpoint_sha256:
        meta[ONNX_SHA_KEY] = checkpoint_sha256
    if fold_normalisation:
        meta[ONNX_FOLDED_KEY] = "true"
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, opset: int = 17,
                flip_test: bool | None = None) -> Path:
    """Export a checkpoint's landmark network to ONNX (dynamic batch), written atomically.

    Args:
        checkpoint: a ``model.pt`` written by the training stages (loaded with ``weights_only=True``).
        out: the ``.onnx`` file to write.
        opset: ONNX opset version.
        flip_test: the stored config's flip test, run by the runtime around the graph (None: as the checkpoint's
            ``model.flip_test``).
    Returns:
        the written path.
    Raises:
        facelandmarks.model.checkpoint.CheckpointError: the checkpoint is missing or not readable.
    """
    from facelandmarks.fsutil import atomic_path
    from facelandmarks.model.checkpoint import load_checkpoint

    model, config = load_checkpoint(checkpoint, map_location="cpu")
    if flip_test is not None:
        config = config.model_copy(update={"flip_test": bool(flip_test)})
    graph = onnx_graph(model.eval(), config, sha256_file(Path(checkpoint)), opset)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(graph)
    return out


class OnnxLandmarkNetwork:
    """An exported landmark network run by ONNX Runtime on the CPU, with the flip test around the graph.

    Every call of the graph runs on one ONNX Runtime thread; the crops of a batch (and their mirror images,
    under the flip test) are split into equal chunks of at most ``max_chunk`` images, as many chunks as a
    multiple of ``num_threads``, which run ``num_threads`` at a time on a thread pool. On 2 cores that is faster
    than ONNX Runtime's intra-op threads, whose per-operator hand-offs cost more than these small operators take
    (int8, flip test, batch 32: 2.04 vs 2.65 ms per face measured in the same minute). Small chunks keep a
    call's activations in the core's cache: flip test, batch 32, 2 threads, chunks of 4 instead of 32 took
    0.98x the time for the int8 file and 0.87x for the float one (paired rounds, 2026-12-08). A call with fewer
    images than threads (one crop without the flip test, as in video) runs on one session whose operators use
    the threads. The chunks are fixed by the batch, ``num_threads`` and ``max_chunk``, so the same crops give
    the same landmarks, whatever the machine load.

    Args:
        path: ``.onnx`` file from :func:`export_onnx` or :func:`facelandmarks.inference.quantize.quantize_onnx`,
            or the bytes of :func:`onnx_graph`.
        num_threads: calls of the graph running at once (0: one per core available to this process).
        max_chunk: most images per call of the graph.
    Attributes:
        config: the checkpoint's ``ModelConfig`` (from the file's metadata).
        checkpoint_sha256: sha256 of the checkpoint it was exported from.
        quantization: the int8 settings of a quantised file (:func:`facelandmarks.inference.quantize.quantize_onnx`),
            None for a float file.
        input_dtype: the graph's input type: ``float32`` (exported files) or ``uint8`` (int8 files, whose first
            quantisation step is the identity on [0, 255] pixels, :func:`facelandmarks.inference.quantize.uint8_input`).
        mirror: True when this object runs the mirrored pass (the config's flip test, not inside the graph).
    Raises:
        ValueError: the file is not an ONNX model exported by :func:`export_onnx` (message names the file),
            ``num_threads`` < 0 or ``max_chunk`` < 1.
    """

    def __init__(self, path: str | os.PathLike | bytes, num_threads: int = 0, max_chunk: int = 4):
        from facelandmarks.model.config import ModelConfig
        from facelandmarks.schemes import get_scheme

        self.path = Path("<in memory>") if isinstance(path, bytes) else Path(path)
        if num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {num_threads}")
        if max_chunk < 1:
            raise ValueError(f"max_chunk must be >= 1, got {max_chunk}")
        self.num_threads = int(num_threads) or len(os.sched_getaffinity(0))
        self.max_chunk = int(max_chunk)
        try:  # the bytes, not the path: a second session is made later, when the file may be gone (a temp export)
            self._model = path if isinstance(path, bytes) else self.path.read_bytes()
        except OSError as e:
            raise ValueError(f"{self.path}: cannot read the ONNX file ({e})") from e
        self.session = self._session(1)
        self._wide: Any = None  # intra-op threads for a call too small to split (one image), made when first needed
        meta = self.session.get_modelmeta().custom_metadata_map
        if ONNX_CONFIG_KEY not in meta:
            raise ValueError(f"{self.path}: no {ONNX_CONFIG_KEY} metadata; export it with `facelandmarks export`")
        self.config = ModelConfig.model_validate(json.loads(meta[ONNX_CONFIG_KEY]))
        self.checkpoint_sha256 = meta.get(ONNX_SHA_KEY)
        self.quantization = json.loads(meta[ONNX_QUANT_KEY]) if ONNX_QUANT_KEY in meta else None
        self.input_dtype = np.uint8 if self.session.get_inputs()[0].type == "tensor(uint8)" else np.float32
        self.mirror = bool(self.config.flip_test) and meta.get(ONNX_FLIP_KEY) == "runtime"
        self._scheme = get_scheme(self.config.scheme)
        self._pool: Any = None

    def _session(self, threads: int) -> Any:
        """An ONNX Runtime session of the file with ``threads`` intra-op threads.

        Raises:
            ValueError: ONNX Runtime cannot load the file (message names it).
        """
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            return ort.InferenceSession(self._model, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path}: not a loadable ONNX model ({type(e).__name__}: {e})") from e

    def _run(self, x: np.ndarray) -> np.ndarray:
        """The graph on ``(M, S, S, 3) uint8`` crops: in equal chunks of at most ``max_chunk`` images, a multiple of
        ``num_threads`` of them, ``num_threads`` at once; with fewer images than threads, one call whose
        operators use the threads."""
        from concurrent.futures import ThreadPoolExecutor

        x = x.astype(self.input_dtype, copy=False)
        if 1 < self.num_threads and len(x) < self.num_threads:
            if self._wide is None:
                self._wide = self._session(self.num_threads)
            return self._wide.run(["landmarks"], {"crops": x})[0]
        parts = -(-len(x) // self.max_chunk)
        parts = min(len(x), -(-parts // self.num_threads) * self.num_threads)
        chunks = np.array_split(x, parts)
        if self.num_threads == 1 or parts == 1:
            return np.concatenate([self.session.run(["landmarks"], {"crops": c})[0] for c in chunks])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="onnx-landmarks")
        runs = [self._pool.submit(self.session.run, ["landmarks"], {"crops": c}) for c in chunks]
        return np.concatenate([r.result()[0] for r in runs])

    def predict_crops(self, crops: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """Landmarks of ready crops (the flip test's average when the config asks for it).

        Args:
            crops: ``(N, S, S, 3) uint8`` RGB, ``S = config.input_size``.
            batch_size: crops per run (with the flip test, twice as many images go through the graph).
        Returns:
            ``(N, K, 2) float32`` landmarks in crop pixels.
        """
        import cv2

        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, self.config.num_points, 2), np.float32)
        out = []
        for i in range(0, len(crops), batch_size):
            x = np.ascontiguousarray(crops[i : i + batch_size])
            if not self.mirror:
                out.append(self._run(x))
                continue
            n, s = x.shape[0], x.shape[2]
            # every crop mirrored left-right in one call: rows of all crops stacked into one (N*S, S, 3) image
            mirrored = cv2.flip(x.reshape(n * s, s, x.shape[3]), 1).reshape(x.shape)
            both = self._run(np.concatenate([x, mirrored]))
            out.append(0.5 * (both[:n] + self._scheme.flip(both[n:], s)))
        return np.concatenate(out).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """``{"runtime": "onnxruntime", "file": path, "checkpoint_sha256": ..., "quantization": {...} | None,
        "threads": calls at once, "max_chunk": images per call, "flip_test": "runtime" | "graph" | False}``."""
        flip = "runtime" if self.mirror else ("graph" if self.config.flip_test else False)
        return {"runtime": "onnxruntime", "file": str(self.path), "checkpoint_sha256": self.checkpoint_sha256,
                "quantization": self.quantization, "threads": self.num_threads, "max_chunk": self.max_chunk,
                "flip_test": flip}
