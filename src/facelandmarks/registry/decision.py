"""The champion gate: measure challenger and champion NOW, on the same VALIDATION faces, and decide.

Selection uses validation faces only (issue 10: a gate that selects on the test split turns the test
number into one more tuned number). The challenger takes the alias only when BOTH hold:

* **target** (the product's domain, InfAnFace): it beats the champion on ``target.dataset`` / ``split``
  by at least ``target.min_improvement`` (in the metric's units);
* **guard** (adults, 300-W): it is not worse than the champion on ``guard.dataset`` / ``split`` by more
  than ``guard.max_regression``.

Both models are measured by the evaluation code (:func:`facelandmarks.evaluate.protocols.predict_faces`,
:func:`facelandmarks.evaluate.summary.face_errors` / ``group_metrics``) on the current annotation table,
so a changed split or a changed metric never compares numbers measured on different faces. The test
splits (``report_splits``) are measured beside them and written to the report; they never enter
:func:`decide`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from facelandmarks.evaluate.protocols import ModelRun, predict_faces
from facelandmarks.evaluate.summary import face_errors, group_metrics
from facelandmarks.inference.landmarker import FaceLandmarker
from facelandmarks.params import StrictModel
from facelandmarks.schemes import get_scheme

__all__ = [
    "CompareParams",
    "Comparison",
    "Decision",
    "GuardParams",
    "Measurement",
    "TargetParams",
    "compare",
    "decide",
    "higher_is_better",
    "measure",
]

NORMALISERS = ["inter_ocular", "inter_pupil", "box"]
THRESHOLDS = [0.08, 0.10]


class TargetParams(StrictModel):
    """The comparison the challenger must win (params ``register.compare.target``).

    Attributes:
        dataset: data set of the faces (``infanface``: the product's target domain).
        min_improvement: how much better than the champion the challenger must be, in the metric's units
            (NME: a fraction of the inter-ocular distance, so ``0.002`` = 0.2 NME points). A gain equal to
            the margin passes; ``0`` still requires a strict gain (a tie keeps the champion).
    """

    dataset: str = "infanface"
    min_improvement: float = Field(0.002, ge=0.0)


class GuardParams(StrictModel):
    """The comparison the challenger may not lose by much (params ``register.compare.guard``).

    Attributes:
        dataset: data set of the faces (``300w``: adults, which finetuning on infants may forget).
        max_regression: how much worse than the champion the challenger may be, in the metric's units
            (``0.003`` = 0.3 NME points).
    """

    dataset: str = "300w"
    max_regression: float = Field(0.003, ge=0.0)


class CompareParams(StrictModel):
    """What challenger and champion are compared by (params.yaml ``register.compare``).

    Attributes:
        split: the SELECTION split (``val``). ``test`` is refused: test numbers are reported, never chosen by.
        protocol: ``crops`` (box from the annotation: the model alone) or ``end_to_end`` (MTCNN on the
            photo; both models on the same detections) (:mod:`facelandmarks.evaluate.protocols`).
        metric: a key of :func:`facelandmarks.evaluate.summary.group_metrics` (``nme_inter_ocular``,
            ``auc_08``, ``failure_rate_10``, ...); direction from :func:`higher_is_better`.
        target: the comparison the challenger must win (:class:`TargetParams`).
        guard: the comparison it may not lose beyond a margin (:class:`GuardParams`); None: no guard.
        report_splits: splits measured and reported beside the decision, never used by it (``[test]``).
    Raises:
        pydantic.ValidationError: ``split`` is ``test`` or also in ``report_splits``.
    """

    split: str = "val"
    protocol: Literal["crops", "end_to_end"] = "crops"
    metric: str = "nme_inter_ocular"
    target: TargetParams = Field(default_factory=TargetParams)
    guard: GuardParams | None = Field(default_factory=GuardParams)
    report_splits: list[str] = Field(default_factory=lambda: ["test"])

    @field_validator("split")
    @classmethod
    def _not_test(cls, v: str) -> str:
        if v == "test":
            raise ValueError("the champion is selected on validation faces; the test split is reported, "
                             "never used to choose (use split: val)")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> CompareParams:
        if self.split in self.report_splits:
            raise ValueError(f"report_splits {self.report_splits} must not hold the selection split {self.split!r}")
        return self


def higher_is_better(metric: str) -> bool:
    """AUC and detection rate grow with quality; NME and failure rate shrink."""
    return metric.startswith(("auc", "detected"))


@dataclass(frozen=True)
class Measurement:
    """One data set and split, measured for every model on the same faces.

    Attributes:
        dataset, split: which faces.
        faces: faces counted in the metric (annotated faces of that data set and split, less unreadable
            photos and faces with a zero normalising distance).
        values: model name -> metric value (None when no face was counted).
        per_face: model name -> ``(faces,) float64`` per-face NME of the metric's normaliser (same face order
            for every model); empty for metrics that are not a mean NME.
    """

    dataset: str
    split: str
    faces: int
    values: dict[str, float | None]
    per_face: dict[str, np.ndarray]


def measure(landmarkers: dict[str, FaceLandmarker], faces: pd.DataFrame, groups: list[tuple[str, str]],
            protocol: str, metric: str, scheme: str = "ibug68", match_iou: float = 0.3
            ) -> dict[tuple[str, str], Measurement]:
    """The metric of each model on each ``(dataset, split)`` group, all models on the same faces.

    Photos are read once for all groups and models; end to end, the first model's detector serves all.

    Args:
        landmarkers: name -> model (e.g. ``challenger``, ``champion``).
        faces: annotation rows (the annotation table).
        groups: ``(dataset, split)`` pairs to measure; a pair without faces gives ``faces == 0``.
        protocol: ``crops`` or ``end_to_end``.
        metric: a key of :func:`group_metrics`.
    Returns:
        ``{(dataset, split): Measurement}``.
    Raises:
        ValueError: the metric is not one the evaluation reports.
    """
    sel = faces[pd.MultiIndex.from_arrays([faces["dataset"], faces["split"]]).isin(groups)]
    ids = set(sel["face_id"])
    runs = [ModelRun(name, lm, ids) for name, lm in landmarkers.items()]
    preds, _ = predict_faces(sel, runs, [protocol], match_iou, progress=False) if ids else ({}, [])
    sch = get_scheme(scheme)
    curve = metric.removeprefix("nme_") if metric.startswith("nme_") else "inter_ocular"
    if curve not in NORMALISERS:
        raise ValueError(f"register.compare.metric {metric!r}: unknown normaliser {curve!r} (one of {NORMALISERS})")
    out: dict[tuple[str, str], Measurement] = {}
    for dataset, split in groups:
        gids = set(sel.loc[(sel["dataset"] == dataset) & (sel["split"] == split), "face_id"])
        values: dict[str, float | None] = {}
        per_face: dict[str, np.ndarray] = {}
        counted = 0
        for run in runs:
            if not gids:
                values[run.name] = None
                continue
            err = face_errors(sel, preds[(run.name, protocol)], sch, NORMALISERS, gids).sort_values("face_id")
            numbers = group_metrics(err, NORMALISERS, curve, THRESHOLDS, protocol == "end_to_end")
            if metric not in numbers:
                raise ValueError(f"register.compare.metric {metric!r} is not one of {sorted(numbers)}")
            v = numbers[metric]
            values[run.name] = None if v is None else float(v)
            counted = int(numbers["faces"])
            if metric.startswith("nme_"):
                per_face[run.name] = err[metric].to_numpy(float)
        out[(dataset, split)] = Measurement(dataset, split, counted, values, per_face)
    return out


@dataclass(frozen=True)
class Comparison:
    """Challenger vs champion on one data set and split (one check of the gate).

    Attributes:
        role: ``target`` or ``guard``.
        dataset, split, faces: the faces (see :class:`Measurement`).
        challenger, champion: the metric values (champion None: none to compare with).
        gain: how much better the challenger is (positive = better, in the metric's units, whatever its
            direction); None when a value is missing.
        gain_se: standard error of ``gain`` from the per-face paired differences (NME metrics only;
            ``std(d, ddof=1) / sqrt(n)``), for judging the margin; never used by the decision.
        margin: ``min_improvement`` (target) or ``max_regression`` (guard).
        passed: target: ``gain >= margin`` and ``gain > 0``; guard: ``-gain <= margin``.
    """

    role: str
    dataset: str
    split: str
    faces: int
    challenger: float | None
    champion: float | None
    gain: float | None
    gain_se: float | None
    margin: float
    passed: bool | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, values rounded to 6 decimals."""
        r = lambda v: None if v is None or not math.isfinite(v) else round(float(v), 6)
        return {"dataset": self.dataset, "split": self.split, "faces": self.faces,
                "challenger": r(self.challenger), "champion": r(self.champion), "gain": r(self.gain),
                "gain_se": r(self.gain_se),
                ("min_improvement" if self.role == "target" else "max_regression"): self.margin,
                "passed": self.passed}


def compare(m: Measurement, role: Literal["target", "guard"], margin: float, metric: str) -> Comparison:
    """One check of the gate from a :class:`Measurement` of ``challenger`` (and ``champion``, if measured).

    ``passed`` is None when the check cannot be made (no champion, or no face counted).
    """
    ch, cp = m.values.get("challenger"), m.values.get("champion")
    gain = se = None
    passed = None
    if ch is not None and cp is not None:
        gain = (ch - cp) if higher_is_better(metric) else (cp - ch)
        gain = round(gain, 9)  # metrics are rounded to 5 decimals: no float dust in the comparison
        passed = (gain > 0 and gain >= margin) if role == "target" else (-gain <= margin)
        a, b = m.per_face.get("challenger"), m.per_face.get("champion")
        if a is not None and b is not None and len(a) == len(b):
            d = b - a
            d = d[np.isfinite(d)]
            se = float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None
    return Comparison(role, m.dataset, m.split, m.faces, ch, cp, gain, se, margin, passed)


@dataclass(frozen=True)
class Decision:
    """Whether the challenger takes the alias.

    Attributes:
        promote: move the alias to the challenger.
        reason: one sentence with both comparisons, logged and written to ``reports/register.json``.
    """

    promote: bool
    reason: str


def decide(target: Comparison, guard: Comparison | None, metric: str, has_champion: bool) -> Decision:
    """The gate: promote only when the target check passes and the guard check (if any) passes.

    Args:
        target: the check on the product's domain (validation faces).
        guard: the check on adults (validation faces); None when no guard is configured.
        metric: the metric's name (for the reason).
        has_champion: whether a champion exists (a first model is promoted: there is nothing to beat).
    Returns:
        the :class:`Decision`. Without a champion: promote. Without a counted face in the target (or the
        guard): keep the champion (the gate cannot be checked).
    """
    def fmt(c: Comparison) -> str:
        head = f"{c.role} {c.dataset}/{c.split} ({c.faces} faces): challenger {metric} {_f(c.challenger)}"
        return head if c.champion is None else f"{head} vs champion {_f(c.champion)}, gain {_f(c.gain)}"

    checks = [target] + ([guard] if guard is not None else [])
    if not has_champion:
        return Decision(True, "no champion yet: the first model becomes champion (nothing to compare with); "
                        + "; ".join(fmt(c) for c in checks))
    unchecked = [c for c in checks if c.passed is None]
    if unchecked:
        return Decision(False, "the gate cannot be checked (no face counted in "
                        + ", ".join(f"{c.dataset}/{c.split}" for c in unchecked) + "): the champion is kept")
    parts = [fmt(target) + (f" >= {target.margin}" if target.passed else f" < required {target.margin}")]
    if guard is not None:
        parts.append(fmt(guard) + (f" (allowed loss {guard.margin})" if guard.passed
                                   else f" (loss beyond the allowed {guard.margin})"))
    ok = all(c.passed for c in checks)
    return Decision(ok, ("PROMOTED: " if ok else "kept the champion: ") + "; ".join(parts))


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.5f}"
