"""Crop settings: how a detection box becomes a square model input.

:class:`CropConfig` is what a model checkpoint stores (``CropConfig.model_dump()``), so that serving
cuts faces exactly as the training crops were cut.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from facelandmarks.params import StrictModel

__all__ = ["CropCluster", "CropConfig", "FallbackConfig"]


class CropConfig(StrictModel):
    """Square crop around a detection box (params.yaml ``crop``: ``size``, ``scale``, ...).

    The square's side is ``scale * max(w, h)`` of the MTCNN box, its centre the box centre moved by
    ``offset * max(w, h)``; it is resized to ``size x size`` pixels, padding with ``border_value``
    where it leaves the photo.

    Attributes:
        size: crop side S in pixels (the model's input size).
        scale: square side relative to the detection box's longer side.
        offset: ``(dx, dy)`` centre shift in units of the box's longer side (positive right/down).
        border_value: grey level of the padding.
        anti_alias: Gaussian low-pass before shrinking (see :func:`facelandmarks.crop.geometry.warp_crop`).
    """

    size: int = Field(128, ge=16, le=1024)
    scale: float = Field(1.3, gt=0.5, le=4.0)
    offset: tuple[float, float] = (0.0, 0.0)
    border_value: int = Field(0, ge=0, le=255)
    anti_alias: bool = True


class FallbackConfig(StrictModel):
    """The box used for an annotated face that MTCNN missed, derived from its landmark box.

    MTCNN boxes are larger than the tight box around the 68 points and sit higher (they include the
    forehead). The fallback mimics an MTCNN box so that fallback crops frame the face like detected
    ones: a square of side ``scale * max(w, h)`` of the landmark box, centred on its centre moved by
    ``(dx, dy) * max(w, h)``. The ``crop`` stage measures these three numbers on the matched faces
    (median, reported in ``reports/crop.json`` as ``calibration``) so they can be kept current.
    """

    scale: float = Field(1.1, gt=0.2, le=4.0)
    dx: float = 0.0
    dy: float = -0.1


class CropCluster(StrictModel):
    """Where the crop stage runs (params.yaml ``crop.cluster``); the outputs are the same everywhere.

    The photos are split into chunks of consecutive photos (``facelandmarks.crop.stage.photo_chunks``);
    ``local`` crops them one after another in the stage's process, ``processes`` hands them to a pool of
    ``workers`` processes on this machine (``concurrent.futures``, spawned, ``crop.num_threads`` torch threads
    each), ``dask`` runs one task per chunk on a Dask cluster (``distributed``); the results are merged in
    chunk order.

    Attributes:
        backend: ``local`` (this process), ``processes`` or ``dask``.
        address: the Dask scheduler to connect to (``tcp://host:8786``); null with ``dask``: start a
            LocalCluster of ``workers`` processes on this machine for the stage's duration. The workers
            of a real cluster must run in the project root on a file system shared with the stage
            (they read ``data/raw`` and write the crops); the stage checks this first.
        workers: processes of the pool or of the LocalCluster (one thread each); unused with an ``address``.
        connect_timeout_s: seconds to wait for the scheduler at ``address``.
    Raises:
        pydantic.ValidationError: an ``address`` with ``backend: local``.
    """

    backend: Literal["local", "processes", "dask"] = "local"
    address: str | None = None
    workers: int = Field(2, ge=1)
    connect_timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _address_needs_dask(self) -> CropCluster:
        if self.address and self.backend != "dask":
            raise ValueError(
                f"crop.cluster.address {self.address!r} is set but backend is {self.backend!r}: use backend: dask")
        return self
