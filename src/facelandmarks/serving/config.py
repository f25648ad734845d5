"""Settings of the HTTP service: the ``serve`` section of params.yaml, overridable by environment variables.

Resolution, first match wins:

* model: ``FACELANDMARKS_MODEL_URI``, else ``serve.model_uri`` (default ``models:/facelandmarks@champion``);
* MLflow tracking/registry: ``MLFLOW_TRACKING_URI``, else ``tracking.tracking_uri`` of the params file;
* params file: ``FACELANDMARKS_PARAMS``, else ``./params.yaml`` (defaults when there is none).
"""

from __future__ import annotations

import os
from pathlib import Path

from typing import Literal

from pydantic import Field

from facelandmarks.media import MediaLimits
from facelandmarks.params import StrictModel, load_params, section

__all__ = ["MODEL_ENV", "PARAMS_ENV", "BatchingParams", "ServeParams", "load_serve_params", "registry_version",
           "request_limits"]

#: bytes allowed beyond ``max_upload_mb`` in a one-file request: the multipart envelope (boundaries, headers).
MULTIPART_ENVELOPE = 64 * 1024
#: endpoints that take one file, and those that take several.
SINGLE_FILE_PATHS = ("/faces", "/annotate", "/annotate_gif")
BATCH_PATHS = ("/faces_batch", "/landmark_batch")

MODEL_ENV = "FACELANDMARKS_MODEL_URI"
PARAMS_ENV = "FACELANDMARKS_PARAMS"


class BatchingParams(StrictModel):
    """Adaptive batching of ``POST /landmark_batch`` (BentoML's dispatcher merges concurrent requests).

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
        workers: BentoML worker processes (each loads the model and MTCNN once; read when the service module
            is imported).
        threads: requests one worker runs at the same time (BentoML's thread pool for synchronous endpoints).
            2 by default: BentoML's workers share one listening socket and a keep-alive connection stays with the
            worker that accepted it, so all clients can sit on one worker; with 2 threads it still uses 2 cores.
        max_concurrency: requests the service holds at once, waiting ones included; BentoML splits it evenly over
            the workers (ceil(max_concurrency / workers) each) and answers a request over a worker's share with
            429 at once. Clients' keep-alive connections stick to one worker and the kernel does not spread them
            evenly, so it is set well above the expected number of clients.
        timeout_s: seconds a request may take before BentoML answers 504.
        num_threads: torch (intra-op), OpenMP and OpenCV threads of each worker, set before the model loads
            (0 = the libraries' defaults, i.e. all cores per worker). On a busy CPU more threads than cores
            per process make MTCNN several times slower (OpenMP threads wait on each other), so
            ``threads x num_threads`` is best kept at the number of cores (a worker may hold every client).
        runtime: the landmark network's runtime on the CPU: ``onnx`` (ONNX Runtime, the graph built in memory
            from the loaded checkpoint when the worker starts; ~7x faster than torch at batch 1 here) or
            ``torch``; a GPU always runs torch.
        detect_max_side: longer side (pixels) photos are downscaled to for MTCNN when serving (boxes and
            landmarks are still in photo pixels); 0 = the detector setting stored with the model. MTCNN's
            cost grows with the pixels it sees (its image pyramid), so this is the main speed knob.
        detect_min_score: MTCNN faces scoring below this are not answered (None = the model's stored
            ``min_score``). The crop stage detects with low thresholds to find every annotated face (recall); a
            service answering unknown photos wants precision: on the demo photos the extra detections of
            thresholds 0.3/0.4/0.4 score 0.40-0.88 and the real faces 0.98-1.0.
        detect_rotate_angles: degrees of MTCNN's rotated retry on photos without a face scoring ``rotate_below``
            upright (None = the model's stored ``rotate_angles``; ``[]``: off), so a champion trained before the retry
            existed finds tilted infant faces as a newer one does (InfAnFace test: 77.3 % -> 93.2 % found).
        max_batch_files: most photos in one ``POST /faces_batch`` request (more: 413 before any is decoded).
        max_batch_mb: largest body of a ``/faces_batch`` or ``/landmark_batch`` request in MiB; single-file
            endpoints allow ``limits.max_upload_mb`` plus the multipart envelope. Larger requests are refused
            with 413 from the ``Content-Length`` header, before the body is read.
        limits: photo, GIF and video limits (pixels, frames, frame rate, output size, upload size).
        gif_chunk: frames landmarked together.
        batching: adaptive batching of ``/landmark_batch`` (read when the service module is imported).
        tracking_uri: MLflow tracking URI (filled from the environment / ``tracking`` section).
    """

    model_uri: str = "models:/facelandmarks@champion"
    device: str = "auto"
    batch_size: int = Field(64, ge=1)
    workers: int = Field(2, ge=1)
    threads: int = Field(2, ge=1)
    max_concurrency: int = Field(64, ge=1)
    timeout_s: float = Field(300.0, gt=0)
    num_threads: int = Field(1, ge=0)
    runtime: Literal["torch", "onnx"] = "onnx"
    detect_max_side: int = Field(0, ge=0)
    detect_min_score: float | None = Field(0.9, ge=0.0, le=1.0)
    detect_rotate_angles: tuple[float, ...] | None = (-45.0, -20.0, 20.0, 45.0)
    max_batch_files: int = Field(16, ge=1)
    max_batch_mb: float = Field(128.0, gt=0)
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


def registry_version(model_uri: str, tracking_uri: str | None = None) -> tuple[str, str] | None:
    """The MLflow registry name and version a ``models:/`` URI points at now.

    Args:
        model_uri: ``models:/NAME@ALIAS`` (resolved in the registry), ``models:/NAME/VERSION``; anything
            else (a checkpoint path, ``runs:/...``) is not a registry version.
        tracking_uri: MLflow tracking and registry URI (MLflow's default when None).
    Returns:
        ``(name, version)``, or None when the URI names no registry version.
    Raises:
        mlflow.exceptions.MlflowException: the registry cannot be reached or has no such alias.
    """
    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri[len("models:/") :].strip("/")
    if "@" in ref:
        from mlflow import MlflowClient

        name, alias = ref.split("@", 1)
        mv = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).get_model_version_by_alias(name, alias)
        return name, str(mv.version)
    name, _, version = ref.partition("/")
    return (name, version) if version.isdigit() else None


def request_limits(cfg: ServeParams) -> tuple[dict[str, int], int]:
    """Request-body limits in bytes: ``({path: limit}, default for other paths)``.

    One-file endpoints (and any other path) allow ``limits.max_upload_mb`` MiB plus the multipart envelope;
    the batch endpoints allow ``max_batch_mb`` MiB.
    """
    single = int(cfg.limits.max_upload_mb * 1048576) + MULTIPART_ENVELOPE
    batch = int(cfg.max_batch_mb * 1048576)
    return {**{p: single for p in SINGLE_FILE_PATHS}, **{p: batch for p in BATCH_PATHS}}, single
