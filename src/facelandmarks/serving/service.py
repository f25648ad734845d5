"""The HTTP service (BentoML 1.4): the champion model and MTCNN loaded once, these endpoints.

* ``POST /faces``: a photo (multipart field ``image``) -> JSON list of faces
  ``[{"box": [x0, y0, x1, y1], "score": s, "landmarks": [[x, y] x 68]}, ...]`` in photo pixels
  (EXIF orientation applied; ``[]`` when there is no face);
* ``POST /faces_batch``: the same through BentoML's adaptive batching: one or more photos (multipart
  field ``images``, repeated) -> one list of faces per photo, in order. Photos of concurrent requests
  are landmarked together (one MTCNN + network call) by ``POST /landmark_batch``, the batchable core
  (``serve.batching``: ``max_batch_size``, ``max_latency_ms``);
* ``POST /annotate``: a photo -> PNG with boxes and landmarks drawn;
* ``POST /annotate_gif``: a GIF or short video (multipart field ``media``) -> annotated looping GIF
  (frames, frame rate and size limited by ``serve.limits``);
* ``POST /info``: what is served (model URI, backbone, device, checkpoint hash, limits).

Bad input answers 4xx with a message and the server keeps serving: not an image -> 400, more pixels
than ``serve.limits.max_pixels`` or an upload over ``max_upload_mb`` -> 413. In BentoML 1.4 an
exception raised in a batchable endpoint fails every request merged into that batch, so
``/landmark_batch`` never raises for a bad photo: it answers that photo's error in its place and
``/faces_batch`` (not batchable, one HTTP request of the client) turns it into the 400/413; the
other requests of the batch get their faces. Grayscale, RGBA, 16-bit and EXIF-rotated photos are
converted (:func:`facelandmarks.media.decode_photo`).

The service declares one GPU (``resources={"gpu": 1}``); where there is none, BentoML warns and the
model runs on the CPU (device ``auto``). Settings: :mod:`facelandmarks.serving.config`.

Run it from the project root with ``bentoml serve`` (reads ``bentofile.yaml``), e.g.::

    bentoml serve --host 127.0.0.1 --port 3000
    curl -F image=@photo.jpg http://127.0.0.1:3000/faces
"""

from __future__ import annotations

import base64
import binascii
import logging
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument
from bentoml.validators import ContentType
from PIL import Image
from pydantic import BaseModel, Field

from facelandmarks.io.images import ImageReadError
from facelandmarks.media import MediaReadError, MediaTooLargeError, decode_photo, open_clip, write_gif
from facelandmarks.serving.config import ServeParams, load_serve_params

__all__ = ["FaceLandmarks", "FaceOut", "PayloadTooLarge", "PhotoFaces"]

log = logging.getLogger(__name__)

#: ``serve.batching`` of the params file; read at import because BentoML takes the batching settings
#: from the ``@bentoml.api`` decorator when the class is defined.
BATCHING = load_serve_params().batching


class PayloadTooLarge(BentoMLException):
    """An upload or image over the configured limits (HTTP 413)."""

    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


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


@bentoml.service(
    name="facelandmarks",
    resources={"gpu": 1},
    traffic={"timeout": 300, "max_concurrency": 16},
    workers=1,
)
class FaceLandmarks:
    """Faces and their 68 landmarks over HTTP; the model is ``serve.model_uri`` (``@champion``)."""

    def __init__(self) -> None:
        from facelandmarks.inference import FaceLandmarker

        self.cfg = load_serve_params()
        if self.cfg.num_threads:
            import torch

            torch.set_num_threads(self.cfg.num_threads)
        self.landmarker = FaceLandmarker.load(
            self.cfg.model_uri, device=self.cfg.device, tracking_uri=self.cfg.tracking_uri, batch_size=self.cfg.batch_size
        )
        log.info("facelandmarks service: %r", self.landmarker)

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
        """Adaptive-batching core of ``/faces_batch``: the photos of concurrent calls landmarked together.

        Takes JSON ``{"photos": ["<base64 of an encoded photo>", ...]}``, not multipart files: BentoML's
        in-process call from ``/faces_batch`` goes through aiohttp-asgi-connector 1.2, which splits the
        request at every blank line and so corrupts multipart bodies. Every photo is decoded and checked
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
    async def faces_batch(self, images: list[Path]) -> list[list[FaceOut]]:
        """Faces of one or more photos (field ``images``) via adaptive batching; one list per photo, in order.

        The same answers and refusals as ``/faces`` (400 not an image, 413 over a limit; the message names
        the photo's index). Each call holds two of the service's ``max_concurrency`` slots (its own and the
        in-process call of ``/landmark_batch``).
        """
        if not images:
            raise InvalidArgument("no photo uploaded (multipart field `images`)")
        for i, path in enumerate(images):  # refuse oversized uploads before passing them on
            try:
                _check_upload(path, self.cfg)
            except (PayloadTooLarge, InvalidArgument) as e:
                raise type(e)(f"images[{i}]: {e}") from e
        photos = [base64.b64encode(path.read_bytes()).decode("ascii") for path in images]
        answers = await self.to_async.landmark_batch(photos=photos)
        for i, a in enumerate(answers):
            if a.error is not None:
                cls = PayloadTooLarge if a.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE else InvalidArgument
                raise cls(f"images[{i}]: {a.error}")
        return [a.faces for a in answers]

    @bentoml.api
    def annotate(self, image: Path) -> Image.Image:
        """The photo with every face's box, score and landmarks drawn (PNG)."""
        from facelandmarks.draw import draw_faces

        rgb = self._photo(image)
        return Image.fromarray(draw_faces(rgb, self.landmarker(rgb), self.landmarker.scheme))

    @bentoml.api
    def annotate_gif(self, media: Path, context: bentoml.Context) -> Annotated[Path, ContentType("image/gif")]:
        """A GIF or short video with landmarks drawn on every kept frame, as a looping GIF."""
        from facelandmarks.inference.annotate import annotate_clip

        _check_upload(media, self.cfg)
        try:
            clip = open_clip(media, self.cfg.limits, name="uploaded file")
            result = annotate_clip(self.landmarker, clip, self.cfg.limits.max_side, self.cfg.gif_chunk)
        except MediaTooLargeError as e:
            raise PayloadTooLarge(str(e)) from e
        except MediaReadError as e:
            raise InvalidArgument(str(e)) from e
        out = Path(context.temp_dir) / "annotated.gif"
        write_gif(result.frames, out, result.fps)
        return out

    @bentoml.api
    def info(self) -> dict[str, Any]:
        """What is served: model source, network, device, checkpoint hash and limits."""
        lm = self.landmarker
        return {
            "model_uri": self.cfg.model_uri,
            "checkpoint_sha256": lm.checkpoint_sha256,
            "backbone": lm.config.backbone,
            "head": lm.config.head,
            "input_size": lm.config.input_size,
            "scheme": lm.scheme.name,
            "device": lm.device,
            "limits": self.cfg.limits.model_dump(),
        }
