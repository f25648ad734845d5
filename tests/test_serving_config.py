"""Serving settings (``serve`` of params.yaml), the registry version of a ``models:/`` URI (a real MLflow store),
request-size limits, and the one-line log record of a client error."""

from __future__ import annotations

import logging

import pytest
import yaml
from bentoml.exceptions import InvalidArgument

from facelandmarks.serving.asgi import ClientErrorLogFilter, PayloadTooLarge
from facelandmarks.serving.config import (
    ServeParams,
    load_serve_params,
    registry_version,
    request_limits,
)


def test_serve_section_is_strict_and_has_2_core_defaults(tmp_path):
    cfg = ServeParams()
    # one worker holding every client's keep-alive connection still uses the 2 cores, and 2 workers share the load
    assert cfg.threads * max(cfg.num_threads, 1) == 2 and cfg.workers == 2
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"serve": {"workers": 3, "threads": 2, "detect_max_side": 640}}))
    cfg = load_serve_params(p)
    assert (cfg.workers, cfg.threads, cfg.detect_max_side) == (3, 2, 640)
    p.write_text(yaml.safe_dump({"serve": {"worker": 3}}))
    with pytest.raises(ValueError, match="worker"):
        load_serve_params(p)
    p.write_text(yaml.safe_dump({"serve": {"threads": 0}}))
    with pytest.raises(ValueError, match="threads"):
        load_serve_params(p)


def test_request_limits_per_path():
    cfg = ServeParams.model_validate({"max_batch_mb": 10, "limits": {"max_upload_mb": 2}})
    paths, default = request_limits(cfg)
    assert paths["/faces"] == paths["/annotate"] == paths["/annotate_gif"] == default == 2 * 1048576 + 65536
    assert paths["/faces_batch"] == paths["/landmark_batch"] == 10 * 1048576


def test_registry_version_of_alias_and_number(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("facelandmarks")
    for _ in range(3):
        client.create_model_version("facelandmarks", source=str(tmp_path))
    client.set_registered_model_alias("facelandmarks", "champion", "2")
    assert registry_version("models:/facelandmarks@champion", uri) == ("facelandmarks", "2")
    assert registry_version("models:/facelandmarks/3", uri) == ("facelandmarks", "3")
    assert registry_version("models/finetune/model.pt", uri) is None
    assert registry_version("runs:/abc/model", uri) is None
    with pytest.raises(Exception, match="alias|not found|RESOURCE_DOES_NOT_EXIST"):
        registry_version("models:/facelandmarks@nobody", uri)


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        import sys

        info = sys.exc_info()
    return logging.LogRecord("bentoml._internal.server.http_app", logging.ERROR, __file__, 1, "Exception on %s [%s]",
                             ("/faces", "POST"), info)


def test_client_error_record_becomes_one_line():
    f = ClientErrorLogFilter()
    rec = _record(InvalidArgument("uploaded file: not a readable image\n(details)"))
    assert f.filter(rec) is True
    line = rec.getMessage()
    assert line == "client error 400 Bad Request on POST /faces: uploaded file: not a readable image (details) (request id None)"
    assert rec.exc_info is None and rec.levelno == logging.WARNING
    assert logging.Formatter().format(rec).count("\n") == 0

    rec = _record(PayloadTooLarge("too big"))
    f.filter(rec)
    assert rec.getMessage().startswith("client error 413 Request Entity Too Large on POST /faces: too big")

    rec = _record(RuntimeError("a bug"))  # a server error keeps its traceback
    f.filter(rec)
    assert rec.exc_info is not None and rec.levelno == logging.ERROR
    assert "Traceback" in logging.Formatter().format(rec)
