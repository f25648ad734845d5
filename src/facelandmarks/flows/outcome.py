"""What a retraining run produced, and its summary.

* which report files the pipeline run rewrote, and their content: a stage that DVC skipped leaves its report
  as it was, and the flow must not present last week's register decision as this run's (stages write
  atomically, so a rewrite is a new inode and mtime);
* the champion in the MLflow model registry and the reports of the `evaluate` and `register` stages (names and
  paths from their params sections, validated by their own models);
* the markdown summary a flow run leaves as a Prefect artifact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facelandmarks.params import section

__all__ = ["snapshot", "updated", "read_json", "Outcome", "outcome_settings", "champion_version", "summary_markdown"]


Stamp = tuple[int, int] | None


def snapshot(root: str | os.PathLike, paths: Iterable[str]) -> dict[str, Stamp]:
    """``{path: (inode, mtime_ns) or None when absent}`` for each path relative to ``root``."""
    out: dict[str, Stamp] = {}
    for rel in paths:
        try:
            st = (Path(root) / rel).stat()
            out[rel] = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            out[rel] = None
    return out


def updated(before: dict[str, Stamp], after: dict[str, Stamp]) -> list[str]:
    """Paths that exist in ``after`` and differ from ``before`` (written during the run)."""
    return [p for p, stamp in after.items() if stamp is not None and stamp != before.get(p)]


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON report as a dict, or None when the file does not exist.

    Raises:
        ValueError: the file is not a JSON object (names the file).
    """
    p = Path(path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object")
    return data


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


def _scalars(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _scalars(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out.append((f"{prefix}{k}", v))
    return out


def summary_markdown(result: dict[str, Any], max_metrics: int = 40) -> str:
    """Markdown of a :func:`facelandmarks.flows.retrain.retrain` result: MLflow runs (linked), stages,
    champion, Bento, and up to ``max_metrics`` scalar metrics."""
    ml, champ = result["mlflow"], result["champion"]
    lines = [
        "# Retraining",
        "",
        f"MLflow pipeline run: [{ml['parent_run_id']}]({ml['url']})",
        "",
        "| stage run | status | MLflow |",
        "|---|---|---|",
        *[f"| {c['stage']} | {c['status']} | [{c['run_id'][:8]}]({c['url']}) |" for c in ml["children"]],
        "",
        f"DVC ran: {', '.join(result['stages']['ran']) or 'nothing'}; "
        f"up to date: {', '.join(result['stages']['skipped']) or 'none'}.",
        "",
        f"Champion `{champ['model']}@{champ['alias']}`: version {champ['before']} -> {champ['after']} "
        f"({'changed' if champ['changed'] else 'unchanged'}). Bento: {result['bento'] or 'none built'}.",
    ]
    if result["decision"] is not None:
        lines += ["", "Register decision:", "", "```json", json.dumps(result["decision"], indent=2)[:4000], "```"]
    if result["metrics"]:
        rows = _scalars(result["metrics"])[:max_metrics]
        lines += ["", "| metric | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]
    return "\n".join(lines) + "\n"
