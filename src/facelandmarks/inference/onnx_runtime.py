"""The landmark network as ONNX, run with ONNX Runtime (CPU) instead of PyTorch.

:func:`export_onnx` writes the network of a checkpoint with a dynamic batch axis. The graph takes raw crops,
``(B, S, S, 3) float32`` RGB in [0, 255] (the ``uint8`` crops cast to float), and does the model's own input
normalisation and, when the checkpoint asks for it, the flip test inside, so it needs no Python around it:
output ``(B, K, 2) float32`` landmarks in crop pixels (pixel centres at integers), exactly what
:func:`facelandmarks.model.prediction.predict_crops` returns. The checkpoint's ``ModelConfig`` (scheme, input
size, crop and detector settings) and the checkpoint's sha256 are stored in the ONNX file's metadata, so the
file alone is enough to cut faces the way the model was trained (:class:`OnnxLandmarkNetwork`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from facelandmarks.fsutil import sha256_file

__all__ = ["OnnxLandmarkNetwork", "onnx_graph", "export_onnx", "ONNX_CONFIG_KEY"]

#: Metadata key holding the ``ModelConfig`` JSON.
ONNX_CONFIG_KEY = "facelandmarks.model_config"
ONNX_SHA_KEY = "facelandmarks.checkpoint_sha256"




def onnx_graph(model: Any, config: Any, checkpoint_sha256: str | None, opset: int = 17) -> bytes:
    """A landmark network as a serialised ONNX model (dynamic batch; metadata: config and checkpoint hash).

    Args:
        model: a :class:`~facelandmarks.model.network.LandmarkModel` (or a module with its ``forward``), on the CPU.
        config: its ``ModelConfig``; ``config.flip_test`` decides whether the graph holds the mirrored pass.
        checkpoint_sha256: the checkpoint's hash, stored in the metadata (None: not stored).
        opset: ONNX opset version.
    Returns:
        the ONNX model's bytes (checked with ``onnx.checker``).
    """
    import io

    import onnx
    import torch

    from facelandmarks.model.preprocess import MEAN, STD

    flip = bool(getattr(config, "flip_test", False))

    class _RawCrops(torch.nn.Module):
        """``(B, S, S, 3)`` float RGB [0, 255] -> the network's ``(B, K, 2)`` crop-pixel landmarks (flip test as
        ``config`` says; a module without ``predict`` runs its own ``forward``)."""

        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            x = (crops.permute(0, 3, 1, 2) - self.mean) / self.std
            if not hasattr(self.net, "predict"):
                return self.net(x)
            if not flip:
                return self.net.predict(x, False)
            # the flip test of LandmarkModel.predict(x, True), with both passes in one batch of 2B: one pass over
            # the weights instead of two (measured 8-10 % less time per face on 2 CPU cores, batch 1 to 32)
            coords = self.net.forward_train(torch.cat([x, torch.flip(x, dims=[3])]))["coords"]
            upright, mirrored = torch.chunk(coords, 2)
            mirrored = mirrored[:, self.net.flip_index]
            mirrored = torch.stack([(x.shape[3] - 1) - mirrored[..., 0], mirrored[..., 1]], dim=-1)
            return 0.5 * (upright + mirrored)

    s = int(config.input_size)
    buf = io.BytesIO()
    torch.onnx.export(
        _RawCrops(model).eval(), (torch.zeros(2, s, s, 3, dtype=torch.float32),), buf, input_names=["crops"],
        output_names=["landmarks"], dynamic_axes={"crops": {0: "batch"}, "landmarks": {0: "batch"}},
        opset_version=opset, dynamo=False,
    )
    proto = onnx.load_from_string(buf.getvalue())
    meta = {ONNX_CONFIG_KEY: config.model_dump_json()}
    if checkpoint_sha256:
        meta[ONNX_SHA_KEY] = checkpoint_sha256
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
        flip_test: put the mirrored second pass in the graph (None: as the checkpoint's ``model.flip_test``).
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
    """An exported landmark network run by ONNX Runtime on the CPU.

    Args:
        path: ``.onnx`` file from :func:`export_onnx`, or the bytes of :func:`onnx_graph`.
        num_threads: intra-op threads (0: ONNX Runtime's default, one per core).
    Attributes:
        config: the checkpoint's ``ModelConfig`` (from the file's metadata).
        checkpoint_sha256: sha256 of the checkpoint it was exported from.
    Raises:
        ValueError: the file is not an ONNX model exported by :func:`export_onnx` (message names the file).
    """

    def __init__(self, path: str | os.PathLike | bytes, num_threads: int = 0):
        import onnxruntime as ort

        from facelandmarks.model.config import ModelConfig

        self.path = Path("<in memory>") if isinstance(path, bytes) else Path(path)
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = int(num_threads)
            opts.inter_op_num_threads = 1
        try:
            model = path if isinstance(path, bytes) else str(self.path)
            self.session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path}: not a loadable ONNX model ({type(e).__name__}: {e})") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        if ONNX_CONFIG_KEY not in meta:
            raise ValueError(f"{self.path}: no {ONNX_CONFIG_KEY} metadata; export it with `facelandmarks export`")
        self.config = ModelConfig.model_validate(json.loads(meta[ONNX_CONFIG_KEY]))
        self.checkpoint_sha256 = meta.get(ONNX_SHA_KEY)

    def predict_crops(self, crops: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """Landmarks of ready crops.

        Args:
            crops: ``(N, S, S, 3) uint8`` RGB, ``S = config.input_size``.
            batch_size: crops per run.
        Returns:
            ``(N, K, 2) float32`` landmarks in crop pixels.
        """
        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, self.config.num_points, 2), np.float32)
        out = [self.session.run(["landmarks"], {"crops": crops[i : i + batch_size].astype(np.float32)})[0]
               for i in range(0, len(crops), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """``{"runtime": "onnxruntime", "file": path, "checkpoint_sha256": ...}``."""
        return {"runtime": "onnxruntime", "file": str(self.path), "checkpoint_sha256": self.checkpoint_sha256}
