"""Shared pytest fixtures: quiet offline environment, the real data, a real annotation table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"

for _k, _v in {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "HF_HUB_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(_k, _v)

# Stages resolve relative paths (params, data/raw) against the project root.
os.chdir(ROOT)


def pytest_sessionstart(session):
    if not (RAW / "300w").is_dir() or not (RAW / "infanface" / "labels.csv").is_file():
        raise pytest.UsageError(f"{RAW} is missing: run `dvc pull` first (the tests use the real data)")


@pytest.fixture(scope="session")
def raw_dir() -> Path:
    """``data/raw`` restored by ``dvc pull``."""
    return RAW


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``../shared/fixtures`` (dlib and menpo format fixtures)."""
    if not FIXTURES.is_dir():
        raise pytest.UsageError(f"{FIXTURES} is missing: CI runs with ../shared beside the clone")
    return FIXTURES


@pytest.fixture(scope="session")
def annotations(tmp_path_factory):
    """The real annotation table of the default params (all 300-W and InfAnFace faces).

    Built once per session by the download stage's own code into a temporary folder.
    Returns ``(DataFrame, report)``.
    """
    from facelandmarks.data.build import DownloadParams, build_annotations
    from facelandmarks.params import load_params, section

    params = load_params(ROOT / "params.yaml")
    cfg = section(params, "download", DownloadParams)
    return build_annotations(cfg, params["scheme"], int(params["seed"]), progress=False)
