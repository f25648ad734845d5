"""The public predictor: photo in, faces with 68 landmarks out.

:class:`FaceLandmarker` is the one path from pixels to landmarks that the command line
(``facelandmarks predict``), the BentoML service and the end-to-end evaluation share:

1. MTCNN finds the faces (:class:`facelandmarks.detect.mtcnn.FaceDetector`, batched over photos);
2. each face is cut as a square crop exactly as the training crops were cut
   (:func:`facelandmarks.crop.faces.faces_from_detections`, with the crop settings stored in the
   model's checkpoint);
3. all crops of a call go through the landmark network together
   (:func:`facelandmarks.model.prediction.predict_crops`);
4. crop-pixel predictions are mapped back to photo pixels with each crop's exact affine
   (:func:`facelandmarks.crop.geometry.map_points`).

Example:
    >>> from facelandmarks import FaceLandmarker
    >>> lm = FaceLandmarker.load("models:/facelandmarks@champion")   # or "models/finetune/model.pt"
    >>> faces = lm(image)                 # image: (H, W, 3) uint8 RGB
    >>> faces[0].landmarks.shape          # (68, 2) float32, 0-based photo pixels
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelandmarks.crop.config import CropConfig
from facelandmarks.crop.faces import crop_face, faces_from_detections
from facelandmarks.crop.geometry import map_points
from facelandmarks.detect.mtcnn import Detections, DetectorConfig, FaceDetector, detection_overrides
from facelandmarks.device import resolve_device
from facelandmarks.fsutil import sha256_file
from facelandmarks.io.images import to_rgb_uint8
from facelandmarks.schemes import LandmarkScheme, get_scheme

__all__ = ["Face", "FaceLandmarker", "crop_config_of", "detector_config_of"]


@dataclass(frozen=True)
class Face:
    """One face found in a photo.

    Attributes:
        box: ``(4,) float32`` MTCNN box x0, y0, x1, y1 in photo pixels (box edges).
        score: MTCNN face probability in [0, 1].
        landmarks: ``(K, 2) float32`` (K = 68 for ``ibug68``) x, y in 0-based photo pixels, pixel
            centres at integers, in the scheme's point order.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """JSON-ready form: ``{"box": [4 floats], "score": float, "landmarks": [[x, y] x K]}``."""
        return {
            "box": [round(float(v), decimals) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), decimals), round(float(y), decimals)] for x, y in self.landmarks],
        }


def crop_config_of(config: Any) -> CropConfig:
    """The crop settings a model was trained with (``ModelConfig.crop``), its input size as the crop size.

    Keys of ``config.crop`` that are not crop geometry (e.g. the ``crop`` stage's own knobs) are ignored.
    """
    stored = dict(getattr(config, "crop", None) or {})
    geometry = {k: v for k, v in stored.items() if k in CropConfig.model_fields}
    geometry["size"] = int(config.input_size)
    return CropConfig.model_validate(geometry)


def detector_config_of(config: Any, device: str = "auto") -> DetectorConfig:
    """MTCNN settings stored with a model (``ModelConfig.crop["detector"]`` when present), else the defaults.

    Args:
        config: the model's ``ModelConfig``.
        device: ``auto``, ``cpu``, ``cuda`` (overrides the stored device).
    """
    stored = dict((getattr(config, "crop", None) or {}).get("detector") or {})
    stored["device"] = device
    return DetectorConfig.model_validate(stored)




class _FlipTestSet(torch.nn.Module):
    """A :class:`~facelandmarks.model.network.LandmarkModel` with its flip test forced on or off, sharing its weights."""

    def __init__(self, model: torch.nn.Module, flip_test: bool) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config.model_copy(update={"flip_test": flip_test})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``(B, K, 2)`` crop pixels."""
        return self.inner.predict(x, self.config.flip_test)

    def predict(self, x: torch.Tensor, flip_test: bool) -> torch.Tensor:
        """As :meth:`LandmarkModel.predict` (so a variant of a variant works)."""
        return self.inner.predict(x, flip_test)


class FaceLandmarker:
    """Find every face in a photo and put the model's landmarks on it.

    Build it with :meth:`load`. Calling it on one photo returns a list of :class:`Face`; :meth:`predict`
    takes many photos (video frames) and batches detection and landmarking across them. All faces of a
    call go through the network in batches of ``batch_size`` crops.

    Args:
        model: a landmark network (``(B, 3, S, S)`` -> ``(B, K, 2)`` crop pixels), e.g. from
            :func:`facelandmarks.model.checkpoint.load_checkpoint`.
        config: its ``ModelConfig`` (scheme, input size, crop settings).
        detector: a shared :class:`FaceDetector` (built from the model's stored settings when None).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``.
        batch_size: crops per forward pass.
        source: where the model came from (shown in ``repr`` and the service's info).
        checkpoint_sha256: the checkpoint file's hash, when known.
        runtime: ``torch`` (``model`` is a torch module) or ``onnx`` (``model`` is an
            :class:`facelandmarks.inference.onnx_runtime.OnnxLandmarkNetwork`, CPU only).
    Attributes:
        scheme: the :class:`LandmarkScheme` of the predictions.
        crop: the :class:`CropConfig` faces are cut with.
        detector: the MTCNN detector.
    """

    def __init__(
        self,
        model: Any,
        config: Any,
        detector: FaceDetector | None = None,
        device: str = "auto",
        batch_size: int = 64,
        source: str = "<model>",
        checkpoint_sha256: str | None = None,
        runtime: str = "torch",
    ) -> None:
        if runtime not in ("torch", "onnx"):
            raise ValueError(f"unknown runtime {runtime!r}: use torch or onnx")
        self.runtime = runtime
        if runtime == "onnx":
            self.device = "cpu"
            self.model = model
        else:
            self.device = resolve_device(device)
            self.model = model.to(self.device).eval()
        self.config = config
        self.scheme: LandmarkScheme = get_scheme(config.scheme)
        self.crop: CropConfig = crop_config_of(config)
        self.detector = detector or FaceDetector(detector_config_of(config, self.device))
        self.batch_size = int(batch_size)
        self.source = source
        self.checkpoint_sha256 = checkpoint_sha256
        self._variants: dict[tuple[str, bool], FaceLandmarker] = {}

    def variant(self, runtime: str | None = None, flip_test: bool | None = None, num_threads: int = 0) -> "FaceLandmarker":
        """The same weights, detector and crop settings with another network runtime and/or flip test.

        Video mode uses it for a single pass per face on ONNX Runtime. A torch model converts to either runtime
        (the ONNX graph is built in memory, once per variant: cached); an ONNX model can only be returned as is.

        Args:
            runtime: ``torch`` or ``onnx`` (None: this one's).
            flip_test: the mirrored second pass (None: as configured).
            num_threads: ONNX Runtime calls at once of a new ONNX variant, one thread each (0: one per core).
        Raises:
            ValueError: an unknown runtime, or a change asked of an ONNX landmarker (export the checkpoint again).
        """
        runtime = runtime or self.runtime
        flip = bool(getattr(self.config, "flip_test", False)) if flip_test is None else bool(flip_test)
        if runtime not in ("torch", "onnx"):
            raise ValueError(f"unknown runtime {runtime!r}: use torch or onnx")
        if runtime == self.runtime and flip == bool(getattr(self.config, "flip_test", False)):
            return self
        if self.runtime == "onnx":
            raise ValueError(f"{self.source}: an ONNX landmarker cannot change its runtime or flip test; export the "
                             "checkpoint again (facelandmarks export --flip-test/--no-flip-test)")
        key = (runtime, flip)
        if key not in self._variants:
            config = self.config.model_copy(update={"flip_test": flip})
            if runtime == "onnx":
                from facelandmarks.inference.onnx_runtime import (
                    OnnxLandmarkNetwork,
                    onnx_graph,
                )

                net: Any = OnnxLandmarkNetwork(onnx_graph(self.model.cpu(), config, self.checkpoint_sha256),
                                               num_threads=num_threads)
                self.model.to(self.device)
            else:
                net = _FlipTestSet(self.model, flip)
            self._variants[key] = FaceLandmarker(net, config, detector=self.detector, device=self.device,
                                                 batch_size=self.batch_size, source=self.source,
                                                 checkpoint_sha256=self.checkpoint_sha256, runtime=runtime)
        return self._variants[key]

    @classmethod
    def load(
        cls,
        uri: str | os.PathLike,
        device: str = "auto",
        tracking_uri: str | None = None,
        detector: FaceDetector | None = None,
        batch_size: int = 64,
        runtime: str = "torch",
        num_threads: int = 0,
        min_score: float | None = None,
        detect_max_side: int | None = None,
        rotate_angles: Sequence[float] | None = None,
    ) -> "FaceLandmarker":
        """Load a trained model.

        Args:
            uri: an MLflow model URI (``models:/facelandmarks@champion``, ``models:/facelandmarks/3``,
                ``runs:/<id>/model``), a checkpoint file (``models/finetune/model.pt``) or a folder holding
                one (see :mod:`facelandmarks.inference.source`).
            device: ``auto`` (CUDA when available), ``cpu``, ``cuda``.
            tracking_uri: MLflow tracking/registry URI (default: MLflow's, i.e. ``MLFLOW_TRACKING_URI``).
            detector: reuse an existing detector (e.g. to compare two models on the same detections).
            batch_size: crops per forward pass.
            runtime: ``torch``, or ``onnx`` to run the landmark network with ONNX Runtime on the CPU (a
                checkpoint is exported on the fly; an ``.onnx`` file from ``facelandmarks export`` is used as is,
                and a URI ending in ``.onnx`` always runs on ONNX Runtime, whatever ``runtime`` says).
            num_threads: ONNX Runtime calls at once, one thread each (0: one per core; see
                :class:`~facelandmarks.inference.onnx_runtime.OnnxLandmarkNetwork`).
            min_score: drop detections MTCNN scores below this (the service and ``facelandmarks predict`` use
                ``serve.detect_min_score``, 0.9); None: the model's stored ``crop.detector.min_score``.
            detect_max_side: downscale photos to this longer side for MTCNN; None: the stored ``max_side``.
            rotate_angles: degrees of MTCNN's rotated retry on photos without a confident face (the service and
                ``predict`` use ``serve.detect_rotate_angles``; ``()``: off); None: the stored ``rotate_angles``.
                A model trained before the retry existed then finds tilted faces as a newer one does.
        Raises:
            ValueError: an unknown runtime, or an ``.onnx`` file that is not an exported landmark network.
            facelandmarks.inference.source.ModelSourceError: the URI leads nowhere.
            facelandmarks.model.checkpoint.CheckpointError: the file is not a readable checkpoint.
        """
        from facelandmarks.inference.source import local_checkpoint
        from facelandmarks.model.checkpoint import load_checkpoint

        if runtime == "onnx" or os.fspath(uri).endswith(".onnx"):  # an exported network runs only on ONNX Runtime
            out = cls._load_onnx(uri, tracking_uri, detector, batch_size, num_threads)
        else:
            dev = resolve_device(device)
            with local_checkpoint(uri, tracking_uri) as path:
                model, config = load_checkpoint(path, map_location=dev)
                digest = sha256_file(path)
            out = cls(model, config, detector=detector, device=dev, batch_size=batch_size, source=os.fspath(uri),
                      checkpoint_sha256=digest)
        overrides = detection_overrides(min_score, detect_max_side, rotate_angles)
        if overrides and detector is None:
            out.detector = FaceDetector(out.detector.config.model_copy(update=overrides))
        return out

    @classmethod
    def _load_onnx(cls, uri: str | os.PathLike, tracking_uri: str | None, detector: FaceDetector | None,
                   batch_size: int, num_threads: int) -> "FaceLandmarker":
        import tempfile

        from facelandmarks.inference.onnx_runtime import (
            OnnxLandmarkNetwork,
            export_onnx,
        )
        from facelandmarks.inference.source import local_checkpoint

        if str(uri).endswith(".onnx"):
            net = OnnxLandmarkNetwork(uri, num_threads=num_threads)
        else:
            with local_checkpoint(uri, tracking_uri) as path, tempfile.TemporaryDirectory() as tmp:
                net = OnnxLandmarkNetwork(export_onnx(path, Path(tmp) / "model.onnx"), num_threads=num_threads)
        return cls(net, net.config, detector=detector, device="cpu", batch_size=batch_size, source=os.fspath(uri),
                   checkpoint_sha256=net.checkpoint_sha256, runtime="onnx")

    def __repr__(self) -> str:
        return (f"FaceLandmarker(source={self.source!r}, backbone={self.config.backbone!r}, head={self.config.head!r}, "
                f"scheme={self.scheme.name!r}, input_size={self.config.input_size}, device={self.device!r}, "
                f"runtime={self.runtime!r})")

    def __call__(self, image: np.ndarray) -> list[Face]:
        """Faces of one photo.

        Args:
            image: ``(H, W, 3) uint8`` RGB (grayscale, RGBA and 16-bit arrays are converted).
        Returns:
            one :class:`Face` per detected face, by descending detection score; ``[]`` when there is none.
        Raises:
            facelandmarks.io.images.ImageReadError: an array that is not an image.
        """
        return self.predict([image])[0]

    def predict(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces of many photos (e.g. the frames of a video), detection and landmarks batched.

        Args:
            images: ``(H, W, 3) uint8`` RGB photos of any sizes.
        Returns:
            one list of :class:`Face` per photo, in order.
        """
        rgb = [to_rgb_uint8(im, f"image {i}") for i, im in enumerate(images)]
        if not rgb:
            return []
        return self.faces_from_detections(rgb, self.detector.detect(rgb))

    def faces_from_detections(self, images: Sequence[np.ndarray], detections: Sequence[Detections]) -> list[list[Face]]:
        """Landmarks for given detections (the second half of :meth:`predict`).

        Lets a caller detect once and landmark with several models (the ``evaluate`` stage).

        Args:
            images: ``(H, W, 3) uint8`` RGB photos.
            detections: one :class:`Detections` per photo (from :meth:`FaceDetector.detect`).
        Returns:
            one list of :class:`Face` per photo.
        """
        per_photo = [faces_from_detections(im, d, self.crop) for im, d in zip(images, detections)]
        flat = [f for faces in per_photo for f in faces]
        if not flat:
            return [[] for _ in per_photo]
        pred = self.predict_crops(np.stack([f.crop for f in flat]))
        out: list[list[Face]] = []
        i = 0
        for faces in per_photo:
            row = []
            for f in faces:
                pts = map_points(pred[i], f.crop_to_photo).astype(np.float32)
                row.append(Face(box=np.asarray(f.box, np.float32), score=float(f.score), landmarks=pts))
                i += 1
            out.append(row)
        return out

    def landmarks_in_boxes(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks of faces in given boxes, skipping detection (the crops protocol of evaluation).

        Args:
            image: ``(H, W, 3) uint8`` RGB photo.
            boxes: ``(n, 4)`` MTCNN-like boxes x0, y0, x1, y1 (photo pixels); each is cut with the model's
                crop settings.
        Returns:
            ``(n, K, 2) float32`` landmarks in photo pixels.
        Raises:
            ValueError: a degenerate box.
        """
        return self.landmarks_in_photo_boxes([image], [boxes])[0]

    def landmarks_in_photo_boxes(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`landmarks_in_boxes` for several photos, the crops of all of them in one batch.

        Args:
            images: ``(H, W, 3) uint8`` RGB photos.
            boxes: per photo, ``(n_i, 4)`` MTCNN-like boxes x0, y0, x1, y1 in its pixels (``n_i`` may be 0).
        Returns:
            per photo, ``(n_i, K, 2) float32`` landmarks in its pixels.
        Raises:
            ValueError: a degenerate box, or not one box array per photo.
        """
        if len(images) != len(boxes):
            raise ValueError(f"landmarks_in_photo_boxes: {len(images)} photos but {len(boxes)} box arrays")
        per_photo = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes]
        cut = [crop_face(image, box, self.crop) for image, b in zip(images, per_photo) for box in b]
        k = self.scheme.num_points
        if not cut:
            return [np.zeros((0, k, 2), np.float32) for _ in per_photo]
        pred = self.predict_crops(np.stack([c for c, _ in cut]))
        pts = [map_points(p, m).astype(np.float32) for p, (_, m) in zip(pred, cut)]
        out, i = [], 0
        for b in per_photo:
            out.append(np.stack(pts[i : i + len(b)]) if len(b) else np.zeros((0, k, 2), np.float32))
            i += len(b)
        return out

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """The network on ready crops.

        Args:
            crops: ``(N, S, S, 3) uint8`` RGB, ``S = config.input_size``.
        Returns:
            ``(N, K, 2) float32`` landmarks in crop pixels.
        """
        from facelandmarks.model.prediction import predict_crops

        if self.runtime == "onnx":
            return self.model.predict_crops(crops, batch_size=self.batch_size)
        return predict_crops(self.model, crops, batch_size=self.batch_size, device=self.device)
