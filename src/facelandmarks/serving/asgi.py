"""The HTTP layer around the service's endpoints: the web page, the request-size limit, one-line client errors.

* :func:`web_app`: a Starlette app mounted on the service (``bentoml.asgi_app``) that serves the web page
  (``GET /``, files in ``serving/web/``) and BentoML's own API page under ``GET /docs``;
* :class:`RequestSizeLimit`: ASGI middleware refusing a request whose ``Content-Length`` exceeds the limit of
  its path with HTTP 413 before the body is read (a body without ``Content-Length`` is counted as it arrives);
* :class:`ClientErrorLogFilter`: turns BentoML's log record of a refused request (HTTP 4xx, which BentoML logs
  with a full traceback chain) into one line: status, reason, request id.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from pathlib import Path
from typing import Any

from bentoml.exceptions import BentoMLException

__all__ = ["WEB_DIR", "ClientErrorLogFilter", "PayloadTooLarge", "RequestSizeLimit", "client_status", "install_client_error_log",
           "request_id", "web_app"]

#: The web page's files (plain HTML, CSS and JavaScript; no build step).
WEB_DIR = Path(__file__).with_name("web")

log = logging.getLogger("facelandmarks.serving")

#: BentoML's logger of failed requests (``bentoml._internal.server.http_app.log_exception``).
BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"


class PayloadTooLarge(BentoMLException):
    """An upload, request or image over the configured limits (HTTP 413)."""

    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def request_id() -> str | None:
    """BentoML's id of the request being served (the ``X-BentoML-Request-ID`` response header), or None."""
    from bentoml._internal.context import trace_context

    rid = trace_context.request_id
    if rid is None:
        return None
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer

        fmt = BentoMLContainer.logging_formatting.get()["span_id"]
    except Exception:  # configuration not loaded (outside a server): BentoML's default format
        fmt = "016x"
    return format(rid, fmt)


def client_status(exc: BaseException | None) -> int | None:
    """The HTTP status a client error is answered with: 4xx of a ``BentoMLException``, 400 of a pydantic
    ``ValidationError`` (a request whose fields do not validate); None for anything else (a server error)."""
    if exc is None:
        return None
    from pydantic import ValidationError

    if isinstance(exc, BentoMLException):
        status = int(exc.error_code)
        return status if 400 <= status < 500 else None
    if isinstance(exc, ValidationError):
        return 400
    return None


class ClientErrorLogFilter(logging.Filter):
    """Rewrite BentoML's record of a client error (4xx) as one line without a traceback.

    BentoML 1.4 logs every refused request as ``Exception on /faces [POST]`` with the whole exception chain
    (about 6 lines per bad upload). A client error is not a fault of the server: this filter turns it into
    ``client error 400 on POST /faces: <reason> (request id <id>)``. Server errors (5xx, any other
    exception) keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = client_status(exc)
        if status is None:
            return True
        path, method = (record.args + (None, None))[:2] if isinstance(record.args, tuple) else (None, None)
        reason = " ".join(str(exc).split()) if not hasattr(exc, "errors") else _validation_reason(exc)
        record.msg = "client error %d %s on %s %s: %s (request id %s)"
        record.args = (status, HTTPStatus(status).phrase, method, path, reason, request_id())
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _validation_reason(exc: Any) -> str:
    parts = []
    for err in exc.errors(include_context=False, include_input=False)[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or str(exc).splitlines()[0]


_FILTER = ClientErrorLogFilter()


def install_client_error_log() -> None:
    """Attach :class:`ClientErrorLogFilter` to BentoML's request-error logger (idempotent)."""
    logger = logging.getLogger(BENTOML_REQUEST_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def _json_413(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class RequestSizeLimit:
    """ASGI middleware: refuse request bodies over a size limit with HTTP 413, before they are read.

    A request that declares a ``Content-Length`` over its path's limit is answered at once (its body is never
    received, so BentoML never parses or stores it); a body sent without a length (chunked) is counted as it
    arrives and the request fails with the same 413 as soon as it passes the limit. The answer is
    ``{"error": "..."}`` like the service's other refusals. Each refusal is logged as one line.

    Args:
        app: the wrapped ASGI app.
        limits: request path (e.g. ``/faces``) -> largest body in bytes.
        default: limit of other paths in bytes (None = no limit).
    """

    def __init__(self, app: Any, limits: dict[str, int], default: int | None = None) -> None:
        self.app = app
        self.limits = {p.rstrip("/") or "/": int(v) for p, v in limits.items()}
        self.default = default

    def limit_of(self, path: str) -> int | None:
        """The body limit of a request path in bytes (None = none)."""
        return self.limits.get(path.rstrip("/") or "/", self.default)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope.get("path", ""))
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = None
        for k, v in scope.get("headers") or ():
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = None
        if declared is not None and declared > limit:
            message = (f"request body of {declared / 1048576:.1f} MiB exceeds the limit of "
                       f"{limit / 1048576:.1f} MiB for {scope.get('path')}")
            await self._refuse(scope, send, message)
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit / 1048576:.1f} MiB for "
                                          f"{scope.get('path')}")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: dict, send: Any, message: str) -> None:
        rid = request_id()
        log.warning("client error 413 %s on %s %s: %s (request id %s)", HTTPStatus(413).phrase, scope.get("method"),
                    scope.get("path"), message, rid)
        body = _json_413(message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        if rid:
            headers.append((b"x-bentoml-request-id", rid.encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def web_app() -> Any:
    """The web page as a Starlette app: ``GET /`` the page, ``/web/*`` its files, ``GET /docs`` BentoML's
    API page (which the page replaces at ``/``).

    Mounted at ``/`` on the service; BentoML routes a request to it only when one of its routes matches, so
    the API endpoints, ``/readyz`` and ``/metrics`` are untouched.
    """
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, PlainTextResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def index(_: Any) -> Any:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def docs(_: Any) -> Any:
        page = _bentoml_api_page()
        return FileResponse(page) if page else PlainTextResponse("BentoML's API page is not available", 404)

    return Starlette(routes=[Route("/", index, methods=["GET"]), Route("/docs", docs, methods=["GET"]),
                             Mount("/web", StaticFiles(directory=WEB_DIR), name="web")])


def _bentoml_api_page() -> Path | None:
    """BentoML's generated API page (Swagger UI; the one it serves at ``/`` without a web page)."""
    try:
        from _bentoml_impl import server
        from bentoml._internal.configuration.containers import BentoMLContainer

        name = "main-ui.html" if BentoMLContainer.new_index else "main-openapi.html"
    except Exception:
        return None
    page = Path(server.__file__).parent / name
    return page if page.is_file() else None
