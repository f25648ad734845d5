"""Serving load test (benchmarks/serving_load.py) against a real `bentoml serve` of the project's service."""

from __future__ import annotations

import pytest
import torch

from benchmarks.serving_load import ServingMode, ServingOptions, run_serving
from facelandmarks.crop.config import CropConfig
from facelandmarks.model.checkpoint import save_checkpoint
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.network import build_model


@pytest.mark.slow
def test_load_test_against_bentoml_serve(tmp_path, raw_dir):
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"  # an untrained network: the load test is tested, not the model
    save_checkpoint(ckpt, build_model(ModelConfig(crop=CropConfig().model_dump())))
    opts = ServingOptions(
        photo=raw_dir / "demo" / "images" / "face_recognition__obama.jpg",
        requests=6,
        concurrency=3,
        warmup=1,
        modes={"batching_off": ServingMode("/faces", "image"), "absent": ServingMode("/no_such_endpoint", "image")},
        env={"FACELANDMARKS_MODEL_URI": str(ckpt), "BENTOML_HOME": str(tmp_path / "bentoml")},
    )
    r = run_serving(opts)
    off = r["batching_off"]
    assert off["requests"] == 6 and off["concurrency"] == 3 and off["errors"] == 0
    assert off["rps"] > 0 and 0 < off["p50_ms"] <= off["p95_ms"]
    assert off["ready_s"] > 0
    # the server log is kept and read: every answered request is one access line of a worker (the endpoint probe
    # and the warm-up request included)
    assert sum(off["server_log"]["answers_by_worker"].values()) == 1 + 1 + 6 and off["server_log"]["tracebacks"] == 0
    assert r["absent"] == {"missing": "the service has no /no_such_endpoint endpoint", "endpoint": "/no_such_endpoint"}
