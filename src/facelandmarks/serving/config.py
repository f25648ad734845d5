"""Settings of the HTTP service: the ``serve`` section of params.yaml, overridable by environment variables.

Resolution, first match wins:

* model: ``FACELANDMARKS_MODEL_URI``, else ``serve.model_uri`` (default ``models:/facelandmarks@champion``);
* MLflow tracking/registry: ``MLFLOW_TRACKING_URI``, else ``tracking.tracking_uri`` of the params file;
* params file: ``FACELANDMARKS_PARAMS``, else ``./params.yaml`` (defaults when there is none).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from facelandmarks.media import MediaLimits
from facelandmarks.params import StrictModel, load_params, section

__all__ = ["MODEL_ENV", "PARAMS_ENV", "BatchingParams", "ServeParams", "load_serve_params"]

MODEL_ENV = "FACELANDMARKS_MODEL_URI"
PARAMS_ENV = "FACELANDMARKS_PARAMS"


class BatchingParams(StrictModel):
    """Adaptive batching of ``POST /faces_batch`` (BentoML's dispatcher merges concurrent requests).

    Attributes:
        max_batch_size: most photos landmarked in one call (BentoML requires at least 2).
        max_latency_ms: BentoML's latency bound in milliseconds: a queued request whose estimated wait plus
            processing time exceeds it is refused with HTTP 503. It is not a fixed batching window (the
            dispatcher waits only as long as its fitted cost model says pays off), so it is set well above a
            CPU batch's processing time (MTCNN + network take ~0.1-1 s per photo on a CPU core).
    """

    max_batch_size: int = Field(32, ge=2)
    max_latency_ms: int = Field(10000, ge=1)


class ServeParams(StrictModel):
    """The ``serve`` section of params.yaml.

    Attributes:
        model_uri: what to serve: an MLflow model URI or a local checkpoint.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``.
        batch_size: face crops per forward pass.
        num_threads: torch CPU threads (0 = torch's default).
        limits: photo, GIF and video limits (pixels, frames, frame rate, output size, upload size).
        gif_chunk: frames landmarked together.
        batching: adaptive batching of ``/faces_batch`` (read when the service module is imported).
        tracking_uri: MLflow tracking URI (filled from the environment / ``tracking`` section).
    """

    model_uri: str = "models:/facelandmarks@champion"
    device: str = "auto"
    batch_size: int = Field(64, ge=1)
    num_threads: int = Field(0, ge=0)
    limits: MediaLimits = Field(default_factory=MediaLimits)
    gif_chunk: int = Field(8, ge=1)
    batching: BatchingParams = Field(default_factory=BatchingParams)
    tracking_uri: str | None = None


def load_serve_params(path: str | os.PathLike | None = None) -> ServeParams:
    """The service's settings (see the module docstring for the order of precedence).

    Raises:
        ValueError: an invalid ``serve`` section (the message names the file and key).
    """
    p = Path(path or os.environ.get(PARAMS_ENV) or "params.yaml")
    params = load_params(p) if p.is_file() else {}
    cfg = section(params, "serve", ServeParams, str(p)) if "serve" in params else ServeParams()
    updates = {}
    if os.environ.get(MODEL_ENV):
        updates["model_uri"] = os.environ[MODEL_ENV]
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or (params.get("tracking") or {}).get("tracking_uri")
    if tracking and not cfg.tracking_uri:
        updates["tracking_uri"] = str(tracking)
    return cfg.model_copy(update=updates)
