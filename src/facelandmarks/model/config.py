"""What a landmark network is: the params that rebuild it exactly (stored inside every checkpoint)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from facelandmarks.params import StrictModel

__all__ = ["HeadName", "ModelParams", "ModelConfig"]

HeadName = Literal["regression", "heatmap"]


class ModelParams(StrictModel):
    """The ``model`` section of ``params.yaml``.

    Attributes:
        backbone: any timm model name that supports ``features_only=True`` (e.g. ``mobilenetv3_small_100``,
            ``resnet18``).
        pretrained: load ImageNet weights from the Hugging Face hub (needs internet; ``false`` trains from
            scratch).
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
    pretrained: bool = False
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
    """

    num_points: int = Field(68, ge=1)
    scheme: str = "ibug68"
    input_size: int = Field(128, ge=32)
    crop: dict[str, Any] = Field(default_factory=dict)
