"""Serving under load: ``bentoml serve`` on 127.0.0.1, concurrent clients, good photos mixed with bad uploads.

For each mode the service is started as users start it (``bentoml serve`` in the project root, on a free port
of 127.0.0.1), waited for until ``/readyz`` answers, warmed up, then ``requests`` POSTs are sent by
``concurrency`` client threads (one shared ``httpx`` client; a bounded number of requests, no open-ended
flood). A fraction ``bad_fraction`` of them, spread evenly and in a fixed order, are bad uploads that the
service must refuse with a 4xx: not an image, a truncated JPEG, an upload over ``serve.limits.max_upload_mb``
and an empty file. Figures: successful good requests per second over the wall time of the whole load, p50 and
p95 latency of the good requests, every answer counted by HTTP status, every non-2xx answer by status and
cause (the service's message with numbers masked), unexpected answers (a good photo not answered 200, a bad
upload not answered 4xx, 5xx), and whether the server still answers afterwards. The server's log is kept
(``log_dir``) and its tracebacks and one-line client errors are counted. The server is stopped with SIGTERM
(BentoML then stops its workers).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "BadUpload",
    "BentoServer",
    "ServingMode",
    "ServingOptions",
    "bad_uploads",
    "free_port",
    "load_test",
    "log_stats",
    "run_serving",
    "upload_plan",
]

log = logging.getLogger(__name__)


@dataclass
class ServingMode:
    """How one serving mode is reached.

    Attributes:
        endpoint: API path that takes photos and returns faces as JSON.
        form_field: multipart form field of the photo (one photo per request), or the JSON key of the list of
            base64 photos when ``encoding`` is ``json_base64``.
        env: extra environment of the server process.
        encoding: ``multipart`` (a file upload) or ``json_base64`` (``{form_field: ["<base64>"]}``).
        bad_uploads: whether bad uploads are mixed in (an endpoint that answers a bad photo inside a 200, like
            ``/landmark_batch``, is measured on good photos only).
        concurrency: clients of this mode (None: :attr:`ServingOptions.concurrency`).
    """

    endpoint: str
    form_field: str
    env: dict[str, str] = field(default_factory=dict)
    encoding: str = "multipart"
    bad_uploads: bool = True
    concurrency: int | None = None


#: The service's endpoints (src/facelandmarks/serving/service.py): ``/faces`` answers each request on its own;
#: ``/landmark_batch`` is its adaptive-batching twin (JSON ``{"photos": [base64, ...]}``): BentoML's dispatcher
#: merges the photos of concurrent requests into one MTCNN + network call (``serve.batching``).
DEFAULT_MODES = {
    "batching_on": ServingMode("/landmark_batch", "photos", encoding="json_base64", bad_uploads=False),
    "batching_off": ServingMode("/faces", "image"),
    # the throughput target of the serving issue: /faces, good photos only, 8 clients
    "throughput_8": ServingMode("/faces", "image", bad_uploads=False, concurrency=8),
}


@dataclass
class ServingOptions:
    """Settings of the serving benchmark.

    Attributes:
        target: what ``bentoml serve`` serves (``.`` = the project's ``bentofile.yaml``).
        photo: the good request payload (a demo photo).
        requests: timed requests per mode (good and bad together).
        concurrency: client threads.
        warmup: untimed good requests first.
        bad_fraction: share of the timed requests that are bad uploads (modes with ``bad_uploads``).
        oversized_mb: size of the oversized bad upload in MiB (None: ``serve.limits.max_upload_mb`` of the
            params file the server reads, plus 1).
        ready_timeout_s: how long to wait for ``/readyz``.
        modes: mode name -> :class:`ServingMode`.
        env: environment for every server process (e.g. ``FACELANDMARKS_MODEL_URI``, ``MLFLOW_TRACKING_URI``).
        log_dir: where each mode's server log is kept (``<mode>.log``).
    """

    target: str = "."
    photo: Path = Path("data/raw/demo/images/face_recognition__obama.jpg")
    requests: int = 200
    concurrency: int = 8
    warmup: int = 10
    bad_fraction: float = 0.1
    oversized_mb: float | None = None
    ready_timeout_s: float = 240.0
    modes: dict[str, ServingMode] = field(default_factory=lambda: dict(DEFAULT_MODES))
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path = Path("benchmarks/out/serving")


@dataclass(frozen=True)
class BadUpload:
    """An upload the service must refuse.

    Attributes:
        kind: ``not_an_image``, ``truncated_jpeg``, ``oversized`` or ``empty``.
        filename: the multipart file name.
        data: the bytes.
        expect: the HTTP status the service answers it with.
    """

    kind: str
    filename: str
    data: bytes
    expect: int


def bad_uploads(photo: bytes, oversized_mb: float) -> list[BadUpload]:
    """The bad uploads mixed into the load, made from the good photo (same bytes every run).

    Args:
        photo: the good photo (a JPEG): its first third is the truncated JPEG.
        oversized_mb: size of the oversized upload in MiB (over the service's ``max_upload_mb``).
    """
    text = b"facelandmarks serving benchmark: this upload is text, not an image.\n" * 64
    oversized = (photo * (int(oversized_mb * 1048576) // len(photo) + 1))[: int(oversized_mb * 1048576)]
    return [
        BadUpload("not_an_image", "notes.jpg", text, 400),
        BadUpload("truncated_jpeg", "truncated.jpg", photo[: len(photo) // 3], 400),
        BadUpload("oversized", "huge.jpg", oversized, 413),
        BadUpload("empty", "empty.jpg", b"", 400),
    ]


def upload_plan(requests: int, bad_fraction: float, kinds: int) -> list[int]:
    """Which request carries what: ``-1`` the good photo, ``k >= 0`` bad upload number ``k`` (cycling).

    Bad uploads are spread evenly (request ``i`` is bad when ``floor((i + 1) f)`` passes ``floor(i f)``), so
    the plan is the same in every run and every client thread meets some.
    """
    plan, bad = [], 0
    for i in range(requests):
        if kinds and int((i + 1) * bad_fraction) > int(i * bad_fraction):
            plan.append(bad % kinds)
            bad += 1
        else:
            plan.append(-1)
    return plan


def _cause(status: int, text: str) -> str:
    """A non-2xx answer's cause: the service's message without file names and numbers."""
    try:
        body = json.loads(text)
        body = body[0] if isinstance(body, list) and body else body
        msg = str(body.get("error") or body) if isinstance(body, dict) else str(body)
    except (ValueError, AttributeError):
        msg = text or f"HTTP {status}"
    msg = re.sub(r"^(uploaded file|images\[\d+\]): ", "", msg.strip())
    msg = msg.split(" (")[0]  # "(UnidentifiedImageError: ... <_io.BytesIO object at 0x...>)"
    return re.sub(r"\d+(\.\d+)?", "N", msg)[:120]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BentoServer:
    """``bentoml serve`` as a context manager: started on a free port, stopped (SIGTERM) on exit.

    The server's output goes to ``log_path`` and is kept after the server stops (to explain failures).

    Args:
        target: ``bentoml serve`` target (``.`` or ``module:Service``).
        env: extra environment variables.
        ready_timeout_s: seconds to wait for ``GET /readyz`` to answer 200.
        cwd: folder to serve from (the project root).
        log_path: the server's log file (default: a new file in the system's temporary folder, also kept).
    Raises:
        RuntimeError: the server exited or was not ready in time (the message ends with its log's tail).
    """

    def __init__(self, target: str = ".", env: dict[str, str] | None = None, ready_timeout_s: float = 240.0,
                 cwd: str | os.PathLike = ".", log_path: str | os.PathLike | None = None) -> None:
        import tempfile

        self.target = target
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout_s = ready_timeout_s
        self.cwd = Path(cwd)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="bentoml-serve-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = None
        self.ready_s: float | None = None

    def log_tail(self, chars: int = 3000) -> str:
        """The last characters of the server's output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> BentoServer:
        import httpx

        bentoml = Path(sys.executable).with_name("bentoml")
        cmd = [str(bentoml) if bentoml.exists() else "bentoml", "serve", self.target,
               "--host", "127.0.0.1", "--port", str(self.port)]
        t0 = time.perf_counter()
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        while True:
            if self.proc.poll() is not None:
                self._close_log()
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

    def alive(self) -> bool:
        """Whether the server process runs and ``/readyz`` answers 200."""
        import httpx

        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.url}/readyz", timeout=10.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._close_log()

    def __exit__(self, *exc) -> None:
        self._stop()


def log_stats(log_path: str | os.PathLike) -> dict:
    """What a server log says about failures.

    Returns:
        ``{"lines", "tracebacks" (lines starting a Python traceback), "client_error_lines" (the service's one-line
        4xx records), "answers_by_worker": {worker id: BentoML access-log lines of answered requests}, "log": path}``.
        The split over workers explains throughput: BentoML's workers share one listening socket, and a keep-alive
        connection stays with the worker that accepted it.
    """
    text = Path(log_path).read_text(errors="replace") if Path(log_path).is_file() else ""
    lines = text.splitlines()
    workers = Counter(m.group(1) for m in (_ACCESS_LINE.search(ln) for ln in lines) if m)
    return {
        "lines": len(lines),
        "tracebacks": sum(ln.startswith("Traceback (most recent call last)") for ln in lines),
        "client_error_lines": sum("] client error " in ln for ln in lines),
        "answers_by_worker": dict(sorted(workers.items(), key=lambda kv: int(kv[0]))),
        "log": str(log_path),
    }


#: a BentoML access-log line of an answered request: ``[entry_service:<name>:<worker>] <client> (...) (status=...``
_ACCESS_LINE = re.compile(r"\[entry_service:[^\]]*:(\d+)\] \S+ \(.*\) \(status=")


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def load_test(url: str, photo: Path, field_name: str, requests: int, concurrency: int, warmup: int = 0,
              timeout_s: float = 120.0, bad: list[BadUpload] | None = None, bad_fraction: float = 0.0,
              encoding: str = "multipart") -> dict:
    """Send ``requests`` POSTs from ``concurrency`` threads, good photos and bad uploads, and time them.

    Args:
        url: the endpoint's full URL.
        photo: the good photo, sent as multipart field ``field_name`` (or as ``{field_name: [base64]}``).
        requests: timed requests (bounded), good and bad together.
        concurrency: client threads.
        warmup: untimed good requests first (sequential).
        bad: the bad uploads to mix in (see :func:`bad_uploads`; multipart only).
        bad_fraction: their share of the timed requests (:func:`upload_plan`).
        encoding: ``multipart`` or ``json_base64``.
    Returns:
        ``{"requests", "concurrency", "good", "bad", "errors", "rps", "p50_ms", "p95_ms", "mean_ms", "wall_s",
        "status_counts": {status: n}, "non_2xx": {status: {cause: n}}, "bad_by_kind": {kind: {status: n}},
        "unexpected": [first few descriptions], "first_error"}``. ``errors`` counts unexpected answers: a good
        photo not answered 200, a bad upload not answered with its 4xx, any 5xx or transport failure. ``rps``
        counts good photos answered 200 over the wall time of the whole load; latencies are of those.
    Raises:
        FileNotFoundError: no such photo.
    """
    import httpx

    p = Path(photo)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: request photo not found (run `dvc pull`)")
    data = p.read_bytes()
    mime = "image/png" if p.suffix.lower() == ".png" else "image/jpeg"
    bad = list(bad or []) if encoding == "multipart" else []
    plan = upload_plan(requests, bad_fraction if bad else 0.0, len(bad))
    b64 = base64.b64encode(data).decode("ascii") if encoding == "json_base64" else None
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=timeout_s, limits=limits) as client:

        def send(which: int) -> httpx.Response:
            if which >= 0:
                b = bad[which]
                return client.post(url, files={field_name: (b.filename, b.data, "image/jpeg")})
            if b64 is not None:
                return client.post(url, json={field_name: [b64]})
            return client.post(url, files={field_name: (p.name, data, mime)})

        def one(which: int) -> tuple[int, float, int | str, str]:
            t = time.perf_counter()
            try:
                r = send(which)
                status: int | str = r.status_code
                cause = "" if 200 <= r.status_code < 300 else _cause(r.status_code, r.text)
            except httpx.HTTPError as e:
                status, cause = "no answer", f"{type(e).__name__}: {e}"[:120]
            return which, time.perf_counter() - t, status, cause

        for _ in range(warmup):
            one(-1)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(one, plan))
        wall = time.perf_counter() - t0

    lat = [t * 1000.0 for which, t, status, _ in results if which < 0 and status == 200]
    status_counts = Counter(str(status) for _, _, status, _ in results)
    non_2xx: dict[str, Counter] = {}
    bad_by_kind: dict[str, Counter] = {}
    unexpected = []
    for which, _, status, cause in results:
        if status != 200 and not (isinstance(status, int) and 200 <= status < 300):
            non_2xx.setdefault(str(status), Counter())[cause] += 1
        if which >= 0:
            bad_by_kind.setdefault(bad[which].kind, Counter())[str(status)] += 1
            ok = status == bad[which].expect
            what = f"bad upload {bad[which].kind}"
        else:
            ok = status == 200
            what = "good photo"
        if not ok:
            unexpected.append(f"{what}: {status} {cause}".strip())
    n_bad = sum(which >= 0 for which in plan)
    return {
        "requests": int(requests),
        "concurrency": int(concurrency),
        "good": int(requests - n_bad),
        "bad": int(n_bad),
        "errors": len(unexpected),
        "rps": float(len(lat) / wall) if wall > 0 else None,
        "p50_ms": _percentile(lat, 50),
        "p95_ms": _percentile(lat, 95),
        "mean_ms": float(np.mean(lat)) if lat else None,
        "wall_s": float(wall),
        "status_counts": dict(sorted(status_counts.items())),
        "non_2xx": {k: dict(v.most_common()) for k, v in sorted(non_2xx.items())},
        "bad_by_kind": {k: dict(v) for k, v in bad_by_kind.items()},
        "unexpected": unexpected[:10],
        "first_error": unexpected[0] if unexpected else None,
    }


def _oversized_mb(opts: ServingOptions) -> float:
    """``max_upload_mb`` + 1 of the params file the server reads (``FACELANDMARKS_PARAMS`` or params.yaml)."""
    if opts.oversized_mb is not None:
        return float(opts.oversized_mb)
    from facelandmarks.serving.config import PARAMS_ENV, load_serve_params

    path = opts.env.get(PARAMS_ENV) or os.environ.get(PARAMS_ENV)
    return float(load_serve_params(path).limits.max_upload_mb) + 1.0


def run_serving(options: ServingOptions | None = None, cwd: str | os.PathLike = ".") -> dict:
    """Load-test the service in each mode.

    A mode whose endpoint the service does not have (HTTP 404 on the first request) is reported as
    ``{"missing": ...}`` instead of failing the run.

    Returns:
        ``{"<mode>": load_test result + {"endpoint", "ready_s", "alive_after", "server_log": log_stats}, "payload",
        "bad_uploads", "note", "seconds"}``.
    Raises:
        RuntimeError: a server did not start, or every good request of a mode failed (the message carries the
            server's log).
    """
    import httpx

    opts = options or ServingOptions()
    t0 = time.perf_counter()
    photo = Path(opts.photo)
    data = photo.read_bytes()
    bad = bad_uploads(data, _oversized_mb(opts))
    out: dict = {"payload": f"`{photo.name}`", "target": opts.target,
                 "bad_uploads": {b.kind: {"bytes": len(b.data), "expect": b.expect} for b in bad}}
    log_dir = Path(opts.log_dir)
    if not log_dir.is_absolute():
        log_dir = Path(cwd) / log_dir
    for name, mode in opts.modes.items():
        log.info("serving: %s (%s)", name, mode.endpoint)
        log_path = log_dir / f"{name}.log"
        with BentoServer(opts.target, {**opts.env, **mode.env}, opts.ready_timeout_s, cwd, log_path) as server:
            url = server.url + mode.endpoint
            if mode.encoding == "json_base64":
                probe = httpx.post(url, json={mode.form_field: [base64.b64encode(data).decode("ascii")]}, timeout=120.0)
            else:
                probe = httpx.post(url, files={mode.form_field: (photo.name, data)}, timeout=120.0)
            if probe.status_code == 404:
                out[name] = {"missing": f"the service has no {mode.endpoint} endpoint", "endpoint": mode.endpoint}
                continue
            res = load_test(url, photo, mode.form_field, opts.requests, mode.concurrency or opts.concurrency, opts.warmup,
                            bad=bad if mode.bad_uploads else None, bad_fraction=opts.bad_fraction,
                            encoding=mode.encoding)
            alive = server.alive()
            if res["good"] and res["rps"] == 0:
                raise RuntimeError(f"serving ({name}): every good request to {url} failed, first: "
                                   f"{res['first_error']}\n{server.log_tail()}")
            out[name] = {**res, "endpoint": mode.endpoint, "ready_s": server.ready_s, "alive_after": alive}
        out[name]["server_log"] = log_stats(log_path)
    kinds = ", ".join(b.kind.replace("_", " ") for b in bad)
    out["note"] = (f"{opts.requests} requests per mode from {opts.concurrency} concurrent clients (8 in the "
                   f"good-photos-only /faces throughput mode), one photo per "
                   f"request, after {opts.warmup} warm-up requests; {opts.bad_fraction:.0%} of the requests to "
                   f"multipart endpoints are bad uploads ({kinds}); latencies and requests/s are of the good "
                   f"photos; server and clients share the machine's CPU.")
    out["seconds"] = time.perf_counter() - t0
    return out
