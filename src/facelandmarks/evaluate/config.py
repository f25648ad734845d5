"""The ``evaluate`` section of params.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from facelandmarks.evaluate.demo import DemoParams
from facelandmarks.params import StrictModel

__all__ = ["Protocol", "ModelEntry", "CedParams", "EvaluateParams"]

Protocol = Literal["crops", "end_to_end"]
Normaliser = Literal["inter_ocular", "inter_pupil", "box"]


class ModelEntry(StrictModel):
    """One model to measure.

    Attributes:
        checkpoint: its checkpoint file (``models/finetune/model.pt``).
        datasets: data sets it is measured on (e.g. the pretrained model only on ``infanface``, to show
            what finetuning gained); empty = every data set of the annotation table.
    """

    checkpoint: str
    datasets: list[str] = Field(default_factory=list)


class CedParams(StrictModel):
    """Grid of the CED curves written as DVC plots (``x = 0, step, ..., max_error``)."""

    max_error: float = Field(0.15, gt=0)
    step: float = Field(0.002, gt=0)


class EvaluateParams(StrictModel):
    """Settings of the ``evaluate`` stage.

    Attributes:
        models: name -> :class:`ModelEntry` (``finetune``, ``pretrain``).
        splits: annotation splits measured (``val``, ``test``).
        protocols: ``crops`` (the literature's: the model on a crop cut from the annotated face's box) and/or
            ``end_to_end`` (the product's path: MTCNN on the photo, then the model on its crops).
        normalisers: NME normalisers reported (inter-ocular, inter-pupil, box).
        curve_normaliser: the NME that the failure rate, AUC and CED use (300-W: inter-ocular).
        thresholds: failure-rate / AUC thresholds (fractions of the normaliser).
        flags: per-face condition flags reported as subsets where a data set has them (InfAnFace).
        match_iou: end to end, a detection is an annotated face's at IoU >= this with its landmark box.
        detector_min_score: end to end, detections MTCNN scores below this are dropped, as the product drops them
            (``serve.detect_min_score``: the service and ``facelandmarks predict`` answer only such faces); None:
            the model's stored ``crop.detector.min_score``.
        detector_max_side: end to end, photos are downscaled to this longer side for MTCNN (``serve.detect_max_side``);
            None or 0: the model's stored ``crop.detector.max_side``.
        detector_rotate_angles: end to end, the rotated retry's angles (``serve.detect_rotate_angles``; ``[]``: off);
            None: the model's stored ``crop.detector.rotate_angles``.
        ced: grid of the CED curves.
        max_faces: at most this many faces per data set and split (0 = all; for quick runs).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_photos: photos per MTCNN pass.
        num_threads: torch CPU threads (0 = torch's default; ``FACELANDMARKS_NUM_THREADS`` wins), per process.
        workers: processes that predict (1: this process; more: a pool of spawned processes, each loading the
            models, on chunks of photos that keep every batch as in one process: the same numbers).
        annotations: the annotation table.
        metrics: DVC metrics file written.
        plots_dir: folder of the CED curve CSVs (DVC plots, ``nme`` vs ``fraction``).
        faces_table: per-face errors (CSV).
        figure: CED figure (PNG, curves only, no photos).
        markdown: the metrics as Markdown tables (for the README).
        demo_model: the model (a key of ``models``) that annotates the README's demo photo and GIF.
        demo: the demo media and figure sizes.
    """

    models: dict[str, ModelEntry] = Field(
        default_factory=lambda: {
            "finetune": ModelEntry(checkpoint="models/finetune/model.pt"),
            "pretrain": ModelEntry(checkpoint="models/pretrain/model.pt", datasets=["infanface"]),
        }
    )
    splits: list[str] = Field(default_factory=lambda: ["val", "test"])
    protocols: list[Protocol] = Field(default_factory=lambda: ["crops", "end_to_end"])
    normalisers: list[Normaliser] = Field(default_factory=lambda: ["inter_ocular", "inter_pupil", "box"])
    curve_normaliser: Normaliser = "inter_ocular"
    thresholds: list[float] = Field(default_factory=lambda: [0.08, 0.10])
    flags: list[str] = Field(default_factory=lambda: ["turned", "occluded", "expressive", "tilted"])
    match_iou: float = Field(0.3, ge=0.0, le=1.0)
    detector_min_score: float | None = Field(None, ge=0.0, le=1.0)
    detector_max_side: int | None = Field(None, ge=0)
    detector_rotate_angles: tuple[float, ...] | None = None
    ced: CedParams = Field(default_factory=CedParams)
    max_faces: int = Field(0, ge=0)
    device: str = "auto"
    batch_photos: int = Field(8, ge=1)
    num_threads: int = Field(0, ge=0)
    workers: int = Field(1, ge=1)
    annotations: str = "data/interim/annotations.parquet"
    metrics: str = "reports/metrics.json"
    plots_dir: str = "reports/plots/ced"
    faces_table: str = "reports/evaluation/faces.csv"
    figure: str = "reports/figures/ced.png"
    markdown: str = "reports/metrics.md"
    demo_model: str | None = "finetune"
    demo: DemoParams = Field(default_factory=DemoParams)

    @field_validator("thresholds")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(t <= 0 for t in v):
            raise ValueError("thresholds must be a non-empty list of positive fractions")
        return v

    @field_validator("models")
    @classmethod
    def _some_model(cls, v: dict[str, ModelEntry]) -> dict[str, ModelEntry]:
        if not v:
            raise ValueError("at least one model is needed")
        return v

    @model_validator(mode="after")
    def _demo_model_is_evaluated(self) -> "EvaluateParams":
        if self.demo_model is not None and self.demo_model not in self.models:
            raise ValueError(f"demo_model {self.demo_model!r} is not one of the models {sorted(self.models)}")
        return self
