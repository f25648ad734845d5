"""The ``train``, ``pretrain`` and ``finetune`` sections of ``params.yaml`` (pydantic, unknown keys are errors)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from facelandmarks.model.losses import LossName
from facelandmarks.params import StrictModel
from facelandmarks.train.dataset import OnlineAugment
from facelandmarks.train.distributed import DistributedParams

__all__ = ["TrainParams", "PretrainParams", "FinetuneParams", "WiseFtParams"]


class TrainParams(StrictModel):
    """Shared loop settings (``train``).

    Attributes:
        batch_size: faces per optimiser step.
        weight_decay: AdamW decoupled weight decay.
        warmup_epochs: linear LR warm-up, epochs.
        min_lr_factor: LR at the end of the cosine, as a fraction of the peak.
        loss: ``l1``, ``l2``, ``wing`` or ``awing`` on coordinates in crop pixels, masked by visibility.
        heatmap_loss: weight of the DSNT heatmap regulariser (Nibali et al. 2018: Jensen-Shannon divergence of
            each softmax heatmap to a Gaussian at the target) added to the coordinate loss; 0: off. Heatmap head only.
        heatmap_sigma: that Gaussian's standard deviation in heatmap cells.
        patience: early stopping after this many epochs without a better validation NME (0: off).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: mixed precision on CUDA (ignored on the CPU).
        channels_last: channels-last memory format on CUDA (ignored on the CPU).
        num_threads: torch CPU threads; 0 = all cores. The environment variable ``FACELANDMARKS_NUM_THREADS``
            wins over it.
        num_workers: DataLoader worker processes (0 or 1 on a 2-core machine).
        max_faces: use at most this many training rows per stage (0 = all; for tiny test runs).
        online_augment: per-sample random flip and similarity transform drawn every epoch.
        resume: continue an interrupted stage from its ``last.pt``.
        state_dir: where ``<stage>/last.pt`` lives (outside the DVC outputs, which DVC deletes before a run).
        log_model: log the model to MLflow with ``mlflow.pytorch.log_model`` (torch.export, a few seconds).
        figure_faces: validation faces drawn in the predictions figure.
        progress: tqdm progress bars.
        distributed: processes per stage (DDP under ``torchrun``; :mod:`facelandmarks.train.distributed`).
    """

    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr_factor: float = Field(0.01, ge=0, le=1)
    loss: LossName = "l1"
    heatmap_loss: float = Field(0.0, ge=0)
    heatmap_sigma: float = Field(1.0, gt=0)
    patience: int = Field(15, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    channels_last: bool = True
    num_threads: int = Field(0, ge=0)
    num_workers: int = Field(0, ge=0)
    max_faces: int = Field(0, ge=0)
    online_augment: OnlineAugment = Field(default_factory=OnlineAugment)
    resume: bool = True
    state_dir: str = "checkpoints"
    log_model: bool = True
    figure_faces: int = Field(8, ge=0)
    progress: bool = True
    distributed: DistributedParams = Field(default_factory=DistributedParams)


class _StageParams(StrictModel):
    dataset: str | list[str]
    epochs: int = Field(60, ge=1)
    lr: float = Field(2e-3, gt=0)
    batch_size: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    online_augment: OnlineAugment | None = None
    variants_per_dataset: dict[str, int] = Field(default_factory=dict)

    @field_validator("variants_per_dataset")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {k: n for k, n in v.items() if n < 1}
        if bad:
            raise ValueError(f"variants_per_dataset must be >= 1 (1 = only variant 0, the plain crop): {bad}")
        return v

    @property
    def datasets(self) -> list[str]:
        """The training data sets, first = the one whose validation split selects the model."""
        return [self.dataset] if isinstance(self.dataset, str) else list(self.dataset)

    @property
    def dataset_name(self) -> str:
        """``300w`` or ``300w+youtube_faces68`` (run names, tags, reports)."""
        return "+".join(self.datasets)


class PretrainParams(_StageParams):
    """``pretrain``: train on the large domain.

    Attributes:
        dataset: a data set name (``300w``) or a list (``[300w, youtube_faces68]``): the training rows are the
            ``train`` rows of every listed data set in ``augmented.parquet``; validation (model selection and
            early stopping) uses the ``val`` crops of the FIRST one only (``crops.parquet``), so adding a
            noisier data set is judged on the data set the model is meant for.
        epochs: epochs over the training rows; the LR schedule spans exactly these (deterministic).
        lr: peak AdamW learning rate.
        batch_size: overrides ``train.batch_size`` when set.
        max_minutes: safety cap on training minutes (None: none); never changes the schedule. Hitting it
            stops training with the best checkpoint so far and reports ``stopped_by_time_cap: true`` and a
            warning; set it about 2x the expected time.
        online_augment: overrides ``train.online_augment`` for this stage when set.
        variants_per_dataset: per data set, use only augment variants ``0 .. n-1`` of each face (``1``: only
            variant 0, the plain crop), so a large, noisier set does not swamp the main one. Data sets not
            listed use all variants.
    """

    dataset: str | list[str] = "300w"


class WiseFtParams(StrictModel):
    """``finetune.wise_ft``: weight-space ensemble of the finetuned and the pretrained model (WiSE-FT, Wortsman et
    al., CVPR 2022), chosen on validation data.

    Attributes:
        alphas: weights of the finetuned model tried, each in (0, 1]; the chosen model is
            ``(1 - alpha) * pretrained + alpha * finetuned``. Empty: off (the finetuned weights as trained).
            ``1.0`` is always tried.
        max_forgetting: an alpha is eligible when every mixed data set's (``finetune.mix``) validation NME is at
            most the pretrained model's plus this (inter-ocular NME as a fraction; 0.003 = 0.3 points); among
            the eligible, the lowest validation NME on the finetuning data set wins.
    """

    alphas: list[float] = Field(default_factory=list)
    max_forgetting: float = Field(0.003, ge=0)

    @field_validator("alphas")
    @classmethod
    def _in_range(cls, v: list[float]) -> list[float]:
        bad = [a for a in v if not 0.0 < a <= 1.0]
        if bad:
            raise ValueError(f"WiSE-FT alphas must be in (0, 1]: {bad}")
        return sorted(set(v))


class FinetuneParams(_StageParams):
    """``finetune``: adapt the pretrained model to the second domain.

    Attributes:
        dataset: ``infanface``.
        init: the pretrained checkpoint to start from.
        lr: peak learning rate of the head.
        backbone_lr: peak learning rate of the backbone (None: same as ``lr``).
        freeze_stages: freeze the stem and the first N feature stages of the backbone (0: train all).
        freeze_bn: keep the backbone's batch-norm statistics at the pretrained values (layers in eval mode).
        reinit_head: ``auto`` re-initialises the head when the point scheme differs from the checkpoint's;
            ``always`` / ``never`` force it.
        test_split: split of ``dataset`` on which the pretrained and the finetuned model are compared.
        mix: adult faces mixed into every finetuning epoch against forgetting: ``{300w: 1.0}`` adds
            ``round(1.0 x the InfAnFace training rows)`` ``train`` rows of 300-W (``augmented.parquet``, drawn
            anew each epoch from the seed and the epoch). Model selection stays on ``dataset``'s validation
            split; each mixed data set's validation NME of the pretrained and the chosen model is reported
            (``val_nme_<name>_pretrained`` / ``_finetuned``).
        wise_ft: after training, keep a weight-space ensemble with the pretrained model when it is better on
            validation data (:class:`WiseFtParams`; off when ``alphas`` is empty).
        epochs, batch_size, max_minutes, online_augment, variants_per_dataset: as in :class:`PretrainParams`.
    """

    dataset: str = "infanface"
    mix: dict[str, float] = Field(default_factory=dict)
    init: str = "models/pretrain/model.pt"
    backbone_lr: float | None = Field(None, gt=0)
    freeze_stages: int = Field(0, ge=0)
    freeze_bn: bool = False
    reinit_head: Literal["auto", "always", "never"] = "auto"
    test_split: str = "test"
    wise_ft: WiseFtParams = Field(default_factory=WiseFtParams)
