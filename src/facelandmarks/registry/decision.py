"""The champion decision: measure challenger and champion on the SAME faces, keep the better one.

Both models are measured now, by the evaluation code (:mod:`facelandmarks.evaluate`), on the current
annotation table's split, so a changed split or a changed metric can never compare numbers measured on
different faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

from facelandmarks.evaluate.protocols import ModelRun, predict_faces
from facelandmarks.evaluate.summary import face_errors, group_metrics
from facelandmarks.inference.landmarker import FaceLandmarker
from facelandmarks.params import StrictModel
from facelandmarks.schemes import get_scheme

__all__ = ["CompareParams", "Decision", "higher_is_better", "measure", "decide"]


class CompareParams(StrictModel):
    """What challenger and champion are compared by (params.yaml ``register.compare``).

    Attributes:
        dataset: data set of the faces (``infanface``: the product's target domain).
        split: their split (``test``).
        protocol: ``crops`` or ``end_to_end`` (:mod:`facelandmarks.evaluate.protocols`).
        metric: a key of :func:`facelandmarks.evaluate.summary.group_metrics` (``nme_inter_ocular``,
            ``auc_08``, ``failure_rate_10``, ...).
        min_improvement: how much better (in the metric's units) the challenger must be.
    """

    dataset: str = "infanface"
    split: str = "test"
    protocol: Literal["crops", "end_to_end"] = "crops"
    metric: str = "nme_inter_ocular"
    min_improvement: float = 0.0


def higher_is_better(metric: str) -> bool:
    """AUC and detection rate grow with quality; NME and failure rate shrink."""
    return metric.startswith(("auc", "detected"))


def measure(landmarkers: dict[str, FaceLandmarker], faces: pd.DataFrame, compare: CompareParams,
            scheme: str = "ibug68", match_iou: float = 0.3) -> dict[str, float]:
    """The comparison metric of each model on the same faces.

    Args:
        landmarkers: name -> model (e.g. ``challenger``, ``champion``).
        faces: annotation rows; those of ``compare.dataset`` / ``compare.split`` are used.
        compare: what to measure.
    Returns:
        name -> metric value.
    Raises:
        ValueError: no face of that data set and split, or the metric is not one the evaluation reports.
    """
    rows = faces[(faces["dataset"] == compare.dataset) & (faces["split"] == compare.split)]
    if len(rows) == 0:
        raise ValueError(f"no annotated face of data set {compare.dataset!r}, split {compare.split!r}")
    ids = set(rows["face_id"])
    # the first model's detector serves all (end to end), so the comparison is on the same detections
    runs = [ModelRun(name, lm, ids) for name, lm in landmarkers.items()]
    preds, _ = predict_faces(rows, runs, [compare.protocol], match_iou, progress=False)
    sch = get_scheme(scheme)
    normalisers = ["inter_ocular", "inter_pupil", "box"]
    curve = compare.metric.removeprefix("nme_") if compare.metric.startswith("nme_") else "inter_ocular"
    out = {}
    for run in runs:
        err = face_errors(rows, preds[(run.name, compare.protocol)], sch, normalisers, ids)
        numbers = group_metrics(err, normalisers, curve, [0.08, 0.10], compare.protocol == "end_to_end")
        if compare.metric not in numbers:
            raise ValueError(f"register.compare.metric {compare.metric!r} is not one of {sorted(numbers)}")
        out[run.name] = float(numbers[compare.metric])
    return out


@dataclass(frozen=True)
class Decision:
    """Whether the challenger takes the alias.

    Attributes:
        promote: move the alias to the challenger.
        reason: one sentence, logged and written to ``reports/register.json``.
    """

    promote: bool
    reason: str


def decide(challenger: float, champion: float | None, metric: str, min_improvement: float = 0.0) -> Decision:
    """Compare two numbers of the same metric on the same faces.

    Args:
        challenger: the new model's value.
        champion: the current champion's value (None: there is no champion).
        metric: its name (direction from :func:`higher_is_better`).
        min_improvement: the margin the challenger must win by.
    """
    if champion is None:
        return Decision(True, f"no champion yet: the challenger ({metric} {challenger:.5f}) becomes champion")
    gain = (challenger - champion) if higher_is_better(metric) else (champion - challenger)
    if gain > min_improvement:
        return Decision(True, f"challenger {metric} {challenger:.5f} beats champion {champion:.5f} by {gain:.5f}")
    return Decision(False, f"challenger {metric} {challenger:.5f} does not beat champion {champion:.5f} "
                           f"by more than {min_improvement}")
