"""The metrics as Markdown tables (``reports/metrics.md``), ready for the README."""

from __future__ import annotations

from typing import Any

__all__ = ["metrics_markdown"]


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.2f}"


def _row(model: str, protocol: str, dataset: str, group: str, m: dict[str, Any], thresholds: list[str]) -> str:
    cells = [model, protocol.replace("_", " "), dataset, group, str(m["faces"]), _pct(m.get("detected")),
             _pct(m.get("nme_inter_ocular")), _pct(m.get("nme_inter_ocular_detected")), _pct(m.get("nme_inter_pupil")),
             _pct(m.get("nme_box"))]
    for k in thresholds:
        cells += [_pct(m.get(f"failure_rate_{k}")), _pct(m.get(f"auc_{k}"))]
    return "| " + " | ".join(cells) + " |"


def metrics_markdown(tree: dict[str, Any], split: str = "test", thresholds: tuple[str, ...] = ("08", "10")) -> str:
    """Two tables: every model, protocol and data set (all faces), then every subset of each data set.

    Args:
        tree: ``reports/metrics.json`` (``{model: {protocol: {dataset: {split: {group: numbers}}}}}``).
        split: the split shown.
        thresholds: threshold keys of the failure-rate / AUC columns.
    Returns:
        Markdown text; numbers in percent (NME as % of the normalising distance).
    """
    head = ["model", "protocol", "data set", "subset", "faces", "detected %", "NME io %", "NME io detected-only %",
            "NME ip %", "NME box %"]
    for k in thresholds:
        head += [f"FR@0.{k} %", f"AUC@0.{k} %"]
    sep = "|" + "|".join("---" for _ in head) + "|"

    def table(groups: str) -> list[str]:
        rows = []
        for model, protocols in tree.items():
            if not isinstance(protocols, dict):
                continue
            for protocol, datasets in protocols.items():
                for dataset, splits in datasets.items():
                    for group, m in (splits.get(split) or {}).items():
                        if (group == "all") == (groups == "all"):
                            rows.append(_row(model, protocol, dataset, group, m, list(thresholds)))
        return rows

    lines = [f"Split `{split}`. NME io / ip / box: normalised by the inter-ocular (outer eye corners), inter-pupil and "
             "box (sqrt(w h)) distance; failure rate (FR) and AUC on inter-ocular NME. All columns are over ALL "
             "annotated faces of the row except 'detected-only'. End to end: MTCNN on the photo; a face MTCNN misses "
             "counts as a failure at every threshold and its NME is that of the landmark-derived fallback box; "
             "crops: the face box from the annotation.", "", "| " + " | ".join(head) + " |", sep, *table("all"), "",
             "Per subset (InfAnFace condition flags: faces with the flag set):", "", "| " + " | ".join(head) + " |", sep,
             *table("subsets")]
    return "\n".join(lines) + "\n"
