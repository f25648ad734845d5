"""Serving under load: ``bentoml serve`` on 127.0.0.1, concurrent clients, adaptive batching on and off.

For each batching mode the service is started as users start it (``bentoml serve`` in the project root, on a
free port of 127.0.0.1), waited for until ``/readyz`` answers, warmed up, then ``requests`` POSTs of a demo
photo are sent by ``concurrency`` client threads (one shared ``httpx`` client; a bounded number of
requests, no open-ended flood). Figures: requests per second over the whole batch of requests, p50 and p95
latency per request, errors. The server is stopped with SIGTERM (BentoML then stops its workers).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ServingMode", "ServingOptions", "free_port", "BentoServer", "load_test", "run_serving"]

log = logging.getLogger(__name__)


@dataclass
class ServingMode:
    """How one batching mode is reached.

    Attributes:
        endpoint: API path that takes photos and returns faces as JSON.
        form_field: multipart form field of the photo (one photo per request).
        env: extra environment of the server process.
    """

    endpoint: str
    form_field: str
    env: dict[str, str] = field(default_factory=dict)


#: The service's endpoints (src/facelandmarks/serving/service.py): ``/faces`` answers each request on its own;
#: ``/faces_batch`` is its adaptive-batching twin (multipart field ``images``, one or more photos per request): it
#: hands the photos to the batchable ``/landmark_batch`` (``@bentoml.api(batchable=True)``, ``serve.batching``),
#: whose dispatcher merges the photos of concurrent requests into one MTCNN + network call.
DEFAULT_MODES = {
    "batching_on": ServingMode("/faces_batch", "images"),
    "batching_off": ServingMode("/faces", "image"),
}


@dataclass
class ServingOptions:
    """Settings of the serving benchmark.

    Attributes:
        target: what ``bentoml serve`` serves (``.`` = the project's ``bentofile.yaml``).
        photo: the request payload (a demo photo).
        requests: timed requests per mode.
        concurrency: client threads.
        warmup: untimed requests first.
        ready_timeout_s: how long to wait for ``/readyz``.
        modes: batching mode -> :class:`ServingMode`.
        env: environment for every server process (e.g. ``FACELANDMARKS_MODEL_URI``, ``MLFLOW_TRACKING_URI``).
    """

    target: str = "."
    photo: Path = Path("data/raw/demo/images/face_recognition__obama.jpg")
    requests: int = 200
    concurrency: int = 8
    warmup: int = 10
    ready_timeout_s: float = 240.0
    modes: dict[str, ServingMode] = field(default_factory=lambda: dict(DEFAULT_MODES))
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BentoServer:
    """``bentoml serve`` as a context manager: started on a free port, stopped (SIGTERM) on exit.

    Args:
        target: ``bentoml serve`` target (``.`` or ``module:Service``).
        env: extra environment variables.
        ready_timeout_s: seconds to wait for ``GET /readyz`` to answer 200.
        cwd: folder to serve from (the project root).
    Raises:
        RuntimeError: the server exited or was not ready in time (the message ends with its log's tail).
    """

    def __init__(self, target: str = ".", env: dict[str, str] | None = None, ready_timeout_s: float = 240.0,
                 cwd: str | os.PathLike = ".") -> None:
        self.target = target
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout_s = ready_timeout_s
        self.cwd = Path(cwd)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="bentoml-serve-", suffix=".log", delete=False)
        self.ready_s: float | None = None

    def log_tail(self, chars: int = 3000) -> str:
        """The last characters of the server's output."""
        try:
            return Path(self._log.name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> "BentoServer":
        import httpx

        bentoml = Path(sys.executable).with_name("bentoml")
        cmd = [str(bentoml) if bentoml.exists() else "bentoml", "serve", self.target,
               "--host", "127.0.0.1", "--port", str(self.port)]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`{' '.join(cmd)}` exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > self.ready_timeout_s:
                self._stop()
                raise RuntimeError(f"`{' '.join(cmd)}` not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)
        self.ready_s = time.perf_counter() - t0
        return self

    def _stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __exit__(self, *exc) -> None:
        self._stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


def load_test(url: str, photo: Path, field_name: str, requests: int, concurrency: int, warmup: int = 0,
              timeout_s: float = 120.0) -> dict:
    """Send ``requests`` POSTs of a photo from ``concurrency`` threads and time them.

    Args:
        url: the endpoint's full URL.
        photo: image file sent as multipart field ``field_name``.
        requests: timed requests (bounded).
        concurrency: client threads.
        warmup: untimed requests first (sequential).
    Returns:
        ``{"requests", "concurrency", "errors", "rps", "p50_ms", "p95_ms", "mean_ms", "wall_s",
        "first_error"}``; ``rps`` counts successful requests over the wall time of the whole batch.
    Raises:
        FileNotFoundError: no such photo.
    """
    import httpx

    p = Path(photo)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: request photo not found (run `dvc pull`)")
    data = p.read_bytes()
    mime = "image/png" if p.suffix.lower() == ".png" else "image/jpeg"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=timeout_s, limits=limits) as client:

        def one(_: int) -> tuple[float, str | None]:
            t = time.perf_counter()
            try:
                r = client.post(url, files={field_name: (p.name, data, mime)})
                err = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
            except httpx.HTTPError as e:
                err = f"{type(e).__name__}: {e}"
            return time.perf_counter() - t, err

        for i in range(warmup):
            one(i)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - t0
    lat = np.array([t for t, e in results if e is None]) * 1000.0
    errors = [e for _, e in results if e is not None]
    return {
        "requests": int(requests),
        "concurrency": int(concurrency),
        "errors": len(errors),
        "rps": float(len(lat) / wall) if wall > 0 else None,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p95_ms": float(np.percentile(lat, 95)) if len(lat) else None,
        "mean_ms": float(lat.mean()) if len(lat) else None,
        "wall_s": float(wall),
        "first_error": errors[0] if errors else None,
    }


def run_serving(options: ServingOptions | None = None, cwd: str | os.PathLike = ".") -> dict:
    """Load-test the service in each batching mode.

    A mode whose endpoint the service does not have (HTTP 404 on the first request) is reported as
    ``{"missing": ...}`` instead of failing the run.

    Returns:
        ``{"<mode>": load_test result + {"endpoint", "ready_s"}, "payload", "note", "seconds"}``.
    Raises:
        RuntimeError: a server did not start, or every request of a mode failed (the message carries the
            server's log).
    """
    import httpx

    opts = options or ServingOptions()
    t0 = time.perf_counter()
    photo = Path(opts.photo)
    out: dict = {"payload": f"`{photo.name}`", "target": opts.target}
    for name, mode in opts.modes.items():
        log.info("serving: %s (%s)", name, mode.endpoint)
        with BentoServer(opts.target, {**opts.env, **mode.env}, opts.ready_timeout_s, cwd) as server:
            url = server.url + mode.endpoint
            probe = httpx.post(url, files={mode.form_field: (photo.name, photo.read_bytes())}, timeout=120.0)
            if probe.status_code == 404:
                out[name] = {"missing": f"the service has no {mode.endpoint} endpoint", "endpoint": mode.endpoint}
                continue
            res = load_test(url, photo, mode.form_field, opts.requests, opts.concurrency, opts.warmup)
            if res["errors"] == res["requests"]:
                raise RuntimeError(f"serving ({name}): every request to {url} failed, first: {res['first_error']}\n"
                                   f"{server.log_tail()}")
            out[name] = {**res, "endpoint": mode.endpoint, "ready_s": server.ready_s}
    out["note"] = (f"{opts.requests} requests from {opts.concurrency} concurrent clients per mode, one photo per "
                   f"request, after {opts.warmup} warm-up requests; server and clients share the machine's CPU.")
    out["seconds"] = time.perf_counter() - t0
    return out
