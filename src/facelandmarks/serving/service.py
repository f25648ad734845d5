"""The HTTP service (BentoML 1.4): the champion model and MTCNN loaded once per worker, these endpoints.

* ``GET /``: the web page (choose or drop a photo, GIF or video; see and download the landmarks; see which
  model is served and the limits); BentoML's API page moves to ``GET /docs``
  (:func:`facelandmarks.serving.asgi.web_app`);
* ``POST /faces``: a photo (multipart field ``image``) -> JSON list of faces
  ``[{"box": [x0, y0, x1, y1], "score": s, "landmarks": [[x, y] x 68]}, ...]`` in photo pixels
  (0-based, pixel centres at integers; EXIF orientation applied; ``[]`` when there is no face);
* ``POST /faces_batch``: one or more photos (multipart field ``images``, repeated, at most
  ``serve.max_batch_files``) -> one list of faces per photo, in order, landmarked in one call
  (MTCNN batched over equal-sized photos, all face crops through the network together);
* ``POST /landmark_batch``: the adaptive-batching endpoint: JSON ``{"photos": ["<base64>", ...]}``; BentoML's
  dispatcher merges the photos of concurrent requests into one landmarking call (``serve.batching``). Meant
  for a GPU: on a CPU MTCNN's cost grows with pixels, not with batch, and the measured gain is within noise
  (1000 requests from 16 clients on 2 busy cores: 3.9 requests/s against 3.5 for ``/faces`` with 10 % bad
  uploads mixed in; benchmarks/serving_load.py);
* ``POST /annotate``: a photo -> PNG with boxes and landmarks drawn;
* ``POST /annotate_gif``: a GIF or short video (multipart field ``media``) -> annotated looping GIF
  (frames, frame rate and size limited by ``serve.limits``);
* ``POST /info``: what is served (where from, registry name and version, model URI, backbone, checkpoint hash,
  device) and the limits.

Bad input answers 4xx with a message and the server keeps serving: not an image, an empty upload -> 400;
more pixels than ``serve.limits.max_pixels``, an upload over ``max_upload_mb``, more photos than
``max_batch_files`` -> 413. A request body over its limit is refused from its ``Content-Length`` before it
is read (:class:`facelandmarks.serving.asgi.RequestSizeLimit`). Each refusal is one log line (status,
reason, request id), not a traceback (:class:`facelandmarks.serving.asgi.ClientErrorLogFilter`). In BentoML
1.4 an exception raised in a batchable endpoint fails every request merged into that batch, so
``/landmark_batch`` never raises for a bad photo: it answers that photo's ``error`` and ``status`` in its
place (HTTP 200). Grayscale, RGBA, 16-bit and EXIF-rotated photos are converted
(:func:`facelandmarks.media.decode_photo`).

Workers, threads per worker and torch/OpenMP/OpenCV threads per worker come from ``serve`` in params.yaml
(read when this module is imported, i.e. in every worker before torch starts). The service declares one GPU
(``resources={"gpu": 1}``); where there is none, BentoML warns and the model runs on the CPU (device
``auto``). Settings: :mod:`facelandmarks.serving.config`.

The model: in a Bento built by ``facelandmarks bento`` (``bentoml build --arg model=facelandmarks:<version>``),
the checkpoint packed with the Bento from the BentoML model store (:mod:`facelandmarks.serving.bento_model`);
MLflow is never asked, so the Bento serves the same registry version whatever ``@champion`` points at later.
In development (``bentoml serve`` from the project root, no ``--arg model=``), or whenever
``FACELANDMARKS_MODEL_URI`` is set, ``serve.model_uri`` (``models:/facelandmarks@champion``) as today: the alias
resolved to one version in the MLflow registry when the worker starts, or a checkpoint path.

Run it from the project root with ``bentoml serve`` (reads ``bentofile.yaml``) and open the printed address,
or::

    bentoml serve --host 127.0.0.1 --port 3000
    curl -F image=@photo.jpg http://127.0.0.1:3000/faces
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path
from typing import Annotated, Any

from facelandmarks.serving.config import (
    MODEL_ENV,
    ServeParams,
    load_serve_params,
    registry_version,
    request_limits,
)

#: ``serve`` of the params file, read at import: BentoML takes workers, threads, traffic and batching from the
#: decorators when the class is defined, and thread counts must be in the environment before torch starts.
SERVE = load_serve_params()
BATCHING = SERVE.batching
if SERVE.num_threads:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, str(SERVE.num_threads))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting OpenMP threads sleep instead of spinning

import bentoml
from bentoml.exceptions import InvalidArgument
from bentoml.validators import ContentType
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from facelandmarks.device import set_threads
from facelandmarks.io.images import ImageReadError
from facelandmarks.media import (
    MediaReadError,
    MediaTooLargeError,
    decode_photo,
    open_clip,
    write_gif,
)
from facelandmarks.serving.asgi import (
    PayloadTooLarge,
    RequestSizeLimit,
    install_client_error_log,
    web_app,
)
from facelandmarks.serving.bento_model import model_source, read_store_model

__all__ = ["BentoArgs", "FaceLandmarks", "FaceOut", "PayloadTooLarge", "PhotoFaces"]

log = logging.getLogger(__name__)

install_client_error_log()


class BentoArgs(BaseModel):
    """Bento arguments (``bentoml build/serve --arg key=value``; a built Bento keeps those it was built with).

    Attributes:
        model: BentoML model store tag of the checkpoint to serve (``facelandmarks:r3-<hash>``, written by
            ``facelandmarks bento``); ``bentoml build`` packs it into the Bento. None: ``serve.model_uri``.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | None = None


#: the Bento's arguments: set by BentoML before this module is imported (build, serve, every worker).
BENTO_ARGS = bentoml.use_arguments(BentoArgs)


class FaceOut(BaseModel):
    """One face in the JSON answer (photo pixels, 0-based, pixel centres at integers)."""

    box: list[float] = Field(description="x0, y0, x1, y1 of the MTCNN box")
    score: float = Field(description="MTCNN face probability")
    landmarks: list[list[float]] = Field(description="68 [x, y] points, iBUG 300-W order")


class PhotoFaces(BaseModel):
    """One photo's answer from ``/landmark_batch``: its faces, or why the photo was refused."""

    faces: list[FaceOut] = Field(default_factory=list, description="faces of the photo ([] when refused or none)")
    error: str | None = Field(None, description="why the photo was refused (not an image, over a limit)")
    status: int | None = Field(None, description="HTTP status of the refusal (400, 413)")


def _check_upload(path: Path, cfg: ServeParams) -> None:
    """Refuse empty uploads (400) and uploads over ``max_upload_mb`` (413)."""
    _check_size(path.stat().st_size, cfg)


def _unbase64(text: str) -> bytes:
    """The bytes of a base64 string; 400 when it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidArgument(f"not base64 ({e})") from e


def _check_size(size: int, cfg: ServeParams) -> None:
    if size > cfg.limits.max_upload_mb * 1024 * 1024:
        raise PayloadTooLarge(f"upload of {size / 1048576:.1f} MiB exceeds the limit of {cfg.limits.max_upload_mb} MiB")
    if size == 0:
        raise InvalidArgument("empty upload")


@bentoml.asgi_app(web_app(), path="/", name="web")
@bentoml.service(
    name="facelandmarks",
    resources={"gpu": 1},
    traffic={"timeout": SERVE.timeout_s, "max_concurrency": SERVE.max_concurrency},
    workers=SERVE.workers,
    threads=SERVE.threads,
)
class FaceLandmarks:
    """Faces and their 68 landmarks over HTTP; the model is the Bento's store model (``--arg model=``), else
    ``serve.model_uri`` (``@champion``)."""

    #: the packed checkpoint: declared so that ``bentoml build`` puts it into the Bento (None in development).
    bento_model = bentoml.models.BentoModel(BENTO_ARGS.model) if BENTO_ARGS.model else None

    def __init__(self) -> None:
        from facelandmarks.detect.mtcnn import FaceDetector, detection_overrides
        from facelandmarks.inference import FaceLandmarker

        install_client_error_log()  # again: BentoML configures logging after importing this module
        self.cfg = load_serve_params()
        if self.cfg.num_threads:  # 0: the libraries' defaults
            set_threads(self.cfg.num_threads, opencv=True)
        self.registry: tuple[str, str] | None = None
        self.store_tag: str | None = None
        override = os.environ.get(MODEL_ENV)
        if self.bento_model is not None and override:
            log.warning("%s=%s overrides the model packed in this Bento (%s)", MODEL_ENV, override, BENTO_ARGS.model)
        if self.bento_model is not None and not override:  # the Bento's own checkpoint; MLflow is not asked
            stored = read_store_model(self.bento_model)
            self.registry, self.store_tag, self.model_uri = stored.registry, stored.tag, stored.model_uri
            self.source = f"bentoml model store {stored.tag}"
            self.landmarker = FaceLandmarker.load(stored.checkpoint, device=self.cfg.device,
                                                  batch_size=self.cfg.batch_size)
            if self.landmarker.checkpoint_sha256 != stored.checkpoint_sha256:
                raise RuntimeError(f"BentoML model {stored.tag}: {stored.checkpoint} has sha256 "
                                   f"{self.landmarker.checkpoint_sha256}, its label says {stored.checkpoint_sha256}")
        else:
            uri = self.model_uri = self.cfg.model_uri
            try:  # pin the alias to one version, so that what /info says is what is loaded
                self.registry = registry_version(uri, self.cfg.tracking_uri)
            except Exception as e:  # the load below names the real problem
                log.warning("could not resolve %s in the MLflow registry: %s", uri, e)
            if self.registry is not None:
                uri = f"models:/{self.registry[0]}/{self.registry[1]}"
            self.source = model_source(uri, self.registry)
            self.landmarker = FaceLandmarker.load(
                uri, device=self.cfg.device, tracking_uri=self.cfg.tracking_uri, batch_size=self.cfg.batch_size
            )
        if self.cfg.runtime == "onnx" and self.landmarker.device == "cpu":
            self.landmarker = self.landmarker.variant("onnx", num_threads=self.cfg.num_threads)
        self.landmarker.source = self.source
        serving = detection_overrides(self.cfg.detect_min_score, self.cfg.detect_max_side, self.cfg.detect_rotate_angles)
        if serving:  # the serving detection settings over the ones stored with the model
            self.landmarker.detector = FaceDetector(self.landmarker.detector.config.model_copy(update=serving))
        det = self.landmarker.detector.config
        log.info("facelandmarks service: %r (%s), registry %s, MTCNN max_side %d min_score %.2f rotated retry %s, "
                 "%d torch threads", self.landmarker, self.source, self.registry, det.max_side, det.min_score,
                 list(det.rotate_angles), self.cfg.num_threads)

    def _photo(self, image: Path) -> Any:
        _check_upload(image, self.cfg)
        return self._decode(image.read_bytes())

    def _decode(self, data: bytes) -> Any:
        """``(H, W, 3) uint8`` RGB of an uploaded photo; 413 over the limits, 400 not an image."""
        _check_size(len(data), self.cfg)
        try:
            return decode_photo(data, name="uploaded file", max_pixels=self.cfg.limits.max_pixels)
        except MediaTooLargeError as e:
            raise PayloadTooLarge(str(e)) from e
        except ImageReadError as e:
            raise InvalidArgument(str(e)) from e

    @bentoml.api
    def faces(self, image: Path) -> list[FaceOut]:
        """Faces of a photo: box, score and 68 landmarks each, in photo pixels (``[]`` when none)."""
        rgb = self._photo(image)
        return [FaceOut(**f.to_dict()) for f in self.landmarker(rgb)]

    @bentoml.api(batchable=True, max_batch_size=BATCHING.max_batch_size, max_latency_ms=BATCHING.max_latency_ms)
    def landmark_batch(self, photos: list[str]) -> list[PhotoFaces]:
        """Adaptive batching: the photos of concurrent calls landmarked together.

        Takes JSON ``{"photos": ["<base64 of an encoded photo>", ...]}``. Every photo is decoded and checked
        like ``/faces``; a refused photo gets ``error`` and ``status`` (400, 413) in its place instead of an
        exception, so it does not fail the other photos of the batch (the answer is HTTP 200). The decoded
        photos go through :meth:`FaceLandmarker.predict` in one call (MTCNN batched over equal-sized photos,
        all face crops through the network together).
        """
        decoded: list[Any] = []
        out: list[PhotoFaces | None] = []
        for text in photos:
            try:
                decoded.append(self._decode(_unbase64(text)))
                out.append(None)
            except (PayloadTooLarge, InvalidArgument) as e:
                out.append(PhotoFaces(error=str(e), status=int(e.error_code)))
        found = iter(self.landmarker.predict(decoded))
        return [a if a is not None else PhotoFaces(faces=[FaceOut(**f.to_dict()) for f in next(found)]) for a in out]

    @bentoml.api
    def faces_batch(self, images: list[Path]) -> list[list[FaceOut]]:
        """Faces of one or more photos (field ``images``); one list per photo, in order.

        All photos of the request are decoded in a worker thread (off the event loop) and landmarked in one
        :meth:`FaceLandmarker.predict` call, in this process. The same answers and refusals as ``/faces``
        (400 not an image, 413 over a limit; the message names the photo's index); more than
        ``serve.max_batch_files`` photos: 413 before any is read.
        """
        if not images:
            raise InvalidArgument("no photo uploaded (multipart field `images`)")
        if len(images) > self.cfg.max_batch_files:
            raise PayloadTooLarge(f"{len(images)} photos in one request exceed the limit of {self.cfg.max_batch_files}")
        decoded = []
        for i, path in enumerate(images):
            try:
                decoded.append(self._photo(path))
            except (PayloadTooLarge, InvalidArgument) as e:
                raise type(e)(f"images[{i}]: {e}") from e
        return [[FaceOut(**f.to_dict()) for f in faces] for faces in self.landmarker.predict(decoded)]

    @bentoml.api
    def annotate(self, image: Path) -> Image.Image:
        """The photo with every face's box, score and landmarks drawn (PNG)."""
        from facelandmarks.draw import draw_faces

        rgb = self._photo(image)
        return Image.fromarray(draw_faces(rgb, self.landmarker(rgb), self.landmarker.scheme))

    @bentoml.api
    def annotate_gif(self, media: Path, context: bentoml.Context) -> Annotated[Path, ContentType("image/gif")]:
        """A GIF or short video with faces tracked (ids, One Euro smoothing: params.yaml ``video``) and
        landmarks drawn on every kept frame, as a looping GIF."""
        from facelandmarks.video import VideoLandmarker, load_video_params, track_clip

        _check_upload(media, self.cfg)
        try:
            clip = open_clip(media, self.cfg.limits, name="uploaded file")
            result = track_clip(VideoLandmarker(self.landmarker, load_video_params()), clip, self.cfg.limits.max_side)
        except MediaTooLargeError as e:
            raise PayloadTooLarge(str(e)) from e
        except MediaReadError as e:
            raise InvalidArgument(str(e)) from e
        out = Path(context.temp_dir) / "annotated.gif"
        write_gif(result.frames, out, result.fps)
        return out

    @bentoml.api
    def info(self) -> dict[str, Any]:
        """What is served and the limits.

        Returns ``{"source", "bento_model", "registry": {"name", "version"} | None, "model_uri", "checkpoint_sha256",
        "backbone", "head", "input_size", "scheme", "num_points", "device", "detector_max_side", "detector_min_score",
        "limits": {...}, "max_batch_files", "max_request_mb": {path: MiB}, "workers", "threads", "max_concurrency",
        "num_threads"}``.
        ``source``: ``bentoml model store facelandmarks:<version>`` (the Bento's packed checkpoint; ``bento_model``
        is that tag), else ``mlflow models:/NAME/VERSION`` or ``checkpoint <path>`` (``bento_model`` None).
        ``model_uri``: the registry version or path the checkpoint came from.
        """
        lm = self.landmarker
        paths, _ = request_limits(self.cfg)
        return {
            "source": self.source,
            "bento_model": self.store_tag,
            "registry": {"name": self.registry[0], "version": self.registry[1]} if self.registry else None,
            "model_uri": self.model_uri,
            "checkpoint_sha256": lm.checkpoint_sha256,
            "backbone": lm.config.backbone,
            "head": lm.config.head,
            "input_size": lm.config.input_size,
            "scheme": lm.scheme.name,
            "num_points": lm.scheme.num_points,
            "device": lm.device,
            "detector_max_side": lm.detector.config.max_side,
            "detector_min_score": lm.detector.config.min_score,
            "detector_rotate_angles": list(lm.detector.config.rotate_angles),
            "limits": self.cfg.limits.model_dump(),
            "max_batch_files": self.cfg.max_batch_files,
            "max_request_mb": {p: round(v / 1048576, 2) for p, v in paths.items()},
            "workers": self.cfg.workers,
            "threads": self.cfg.threads,
            "max_concurrency": self.cfg.max_concurrency,
            "num_threads": self.cfg.num_threads,
        }


_LIMITS, _DEFAULT_LIMIT = request_limits(SERVE)
FaceLandmarks.add_asgi_middleware(RequestSizeLimit, limits=_LIMITS, default=_DEFAULT_LIMIT)
