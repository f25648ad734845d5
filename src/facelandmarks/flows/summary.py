"""The markdown summary a retraining flow run leaves as a Prefect artifact."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["summary_markdown"]


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
