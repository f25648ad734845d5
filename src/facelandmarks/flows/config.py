"""The ``retrain`` section of params.yaml: how the scheduled retraining flow runs.

No DVC stage depends on this section, so changing it never invalidates a stage.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator

from facelandmarks.params import StrictModel, load_params, section

__all__ = ["RetrainParams", "load_retrain_params"]


class RetrainParams(StrictModel):
    """params.yaml ``retrain``: schedule defaults, retries, links and the Bento build.

    Attributes:
        deployment: name of the Prefect deployment that ``facelandmarks schedule`` serves.
        cron: default schedule (cron syntax, 5 fields); ``"0 3 * * 0"`` = Sundays 03:00.
        timezone: IANA time zone of ``cron`` (e.g. ``Europe/Berlin``); UTC by default.
        pull_targets: what ``dvc pull`` brings up to date before each run: the ``.dvc`` files that pin
            the raw data. Empty = every DVC-tracked file, stage outputs included (then every output
            in dvc.lock must be in the remote, or the pull fails).
        pull_retries: extra attempts of a failed ``dvc pull`` (network and remote hiccups).
        pull_timeout_s: a pull that takes longer is killed and counts as a failed attempt.
        retry_delay_seconds: wait before each retry (seconds).
        repro_retries: extra attempts of a failed ``dvc repro``. 0 by default: a failed stage fails the
            run at once (DVC keeps the stages that finished, so a manual rerun resumes there).
        build_bento: build a new Bento (``bentoml build``) when the champion changed.
        bento_retries: extra attempts of a failed ``bentoml build``.
        bentofile: the bentofile, relative to the project root.
        mlflow_ui: base URL of the MLflow UI that run links point to (``mlflow ui`` serves
            http://127.0.0.1:5000 by default); when the tracking URI is an http(s) server, that wins.
    """

    deployment: str = "retrain"
    cron: str = "0 3 * * 0"
    timezone: str | None = None
    pull_targets: list[str] = ["data.dvc"]
    pull_retries: int = Field(3, ge=0)
    pull_timeout_s: float = Field(3600, gt=0)
    retry_delay_seconds: float = Field(30, ge=0)
    repro_retries: int = Field(0, ge=0)
    build_bento: bool = True
    bento_retries: int = Field(1, ge=0)
    bentofile: str = "bentofile.yaml"
    mlflow_ui: str = "http://127.0.0.1:5000"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from prefect.schedules import validate_cron_string

        return validate_cron_string(v)


def load_retrain_params(params_path: str | os.PathLike = "params.yaml") -> RetrainParams:
    """The validated ``retrain`` section of ``params_path``; defaults when the section is absent.

    Raises:
        FileNotFoundError: no params file.
        ValueError: the section is invalid (the message names the file and the key).
    """
    params = load_params(params_path)
    if "retrain" not in params:
        return RetrainParams()
    return section(params, "retrain", RetrainParams, str(Path(params_path)))
