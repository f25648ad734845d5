"""Where the flow reads the outcome of a pipeline run: the champion in the MLflow model registry and
the reports of the ``evaluate`` and ``register`` stages (names and paths from their params sections,
validated by their own models)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from facelandmarks.params import section

__all__ = ["Outcome", "outcome_settings", "champion_version"]


@dataclass(frozen=True)
class Outcome:
    """What to read after ``dvc repro``.

    Attributes:
        model_name: registered model that ``register`` promotes (params ``register.model_name``).
        alias: the alias serving loads (``register.alias``, ``champion``).
        metrics: the evaluate stage's metrics file (``evaluate.metrics``), project-relative.
        decision: the register stage's decision report (``register.report``), project-relative.
    """

    model_name: str
    alias: str
    metrics: str
    decision: str


def outcome_settings(params: Mapping[str, Any], source: str = "params.yaml") -> Outcome:
    """:class:`Outcome` from params (defaults of the stages' own models where a section is absent).

    Raises:
        ValueError: the ``register`` or ``evaluate`` section is invalid (names the file and key).
    """
    from facelandmarks.evaluate.config import EvaluateParams
    from facelandmarks.registry.stage import RegisterParams

    reg = section(params, "register", RegisterParams, source) if "register" in params else RegisterParams()
    ev = section(params, "evaluate", EvaluateParams, source) if "evaluate" in params else EvaluateParams()
    return Outcome(model_name=reg.model_name, alias=reg.alias, metrics=ev.metrics, decision=reg.report)


def champion_version(model_name: str, alias: str) -> str | None:
    """Version of ``model_name`` behind ``alias`` in the MLflow registry (tracking URI already set),
    or None when the model or the alias does not exist yet."""
    import mlflow

    from facelandmarks.registry.models import current_champion

    found = current_champion(mlflow.MlflowClient(), model_name, alias)
    return None if found is None else str(found.version)
