"""The landmark network: any timm backbone (``features_only``) plus a landmark head."""

from __future__ import annotations

import timm
import torch
from torch import nn

from facelandmarks.model.config import ModelConfig
from facelandmarks.model.heads import HEADS
from facelandmarks.model.preprocess import renormalisation
from facelandmarks.model.pretrained import (
    PretrainedError,
    imagenet_source,
    input_normalisation,
    load_by_position,
    offline_file,
)
from facelandmarks.schemes import get_scheme

__all__ = ["LandmarkModel", "build_model", "count_parameters"]


class LandmarkModel(nn.Module):
    """Backbone + head.

    ``model(x)`` with ``x`` ``(B, 3, S, S)`` float32 from :func:`facelandmarks.model.preprocess.to_tensor`
    returns ``(B, K, 2)`` float32 landmarks in crop pixels (0-based, pixel centres at integers); with
    ``config.flip_test`` it averages the prediction of ``x`` and the un-mirrored prediction of mirrored ``x``.
    :meth:`forward_train` returns the head's full output for ``x`` alone (``coords`` and, for the heatmap head,
    ``heatmaps``); training uses it.

    Backbone initialisation (``config.pretrained``): ``imagenet`` loads the pinned offline file of
    :mod:`facelandmarks.model.pretrained` when there is one (else timm's hub), ``true`` timm's hub, ``false``
    random; ``config.pretrained_source``, ``input_mean`` and ``input_std`` are then set to match the weights.

    Attributes:
        config: the :class:`ModelConfig` it was built from (with the source and normalisation filled in).
        backbone: timm feature extractor.
        head: the ``config.head`` class of :data:`facelandmarks.model.heads.HEADS`.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        offline = None
        if config.pretrained:
            if config.pretrained == "imagenet":
                offline, source = imagenet_source(config.backbone)
            else:
                source = f"imagenet: timm hub {config.backbone}"
            mean, std = input_normalisation(config.backbone, config.pretrained)
            config = config.model_copy(update={"pretrained_source": source, "input_mean": tuple(mean),
                                               "input_std": tuple(std)})
        self.config = config
        if config.head not in HEADS:
            raise ValueError(f"unknown head {config.head!r}; use one of {', '.join(HEADS)}")
        head_cls = HEADS[config.head]
        probe = timm.create_model(config.backbone, pretrained=False, features_only=True)
        out_indices = head_cls.feature_indices(probe.feature_info.reduction(), config)
        del probe
        self.backbone = timm.create_model(
            config.backbone, pretrained=bool(config.pretrained) and offline is None, features_only=True,
            out_indices=out_indices,
        )
        if offline is not None:
            full = timm.create_model(config.backbone, pretrained=False)
            load_by_position(full, offline_file(offline), offline.sha256)
            missing, _ = self.backbone.load_state_dict(full.state_dict(), strict=False)
            if missing:
                raise PretrainedError(f"{offline.describe()}: backbone tensors not in the file: {missing[:5]}")
            del full
        self.head = head_cls.from_config(self.backbone.feature_info.channels(),
                                         self.backbone.feature_info.reduction(), config)
        flip_index = get_scheme(config.scheme).flip_index
        if len(flip_index) != config.num_points:
            raise ValueError(f"scheme {config.scheme!r} has {len(flip_index)} points, config says {config.num_points}")
        self.register_buffer("flip_index", torch.as_tensor(flip_index, dtype=torch.long), persistent=False)
        renorm = renormalisation(config.input_mean, config.input_std)
        self.renormalise = renorm is not None
        if renorm is not None:  # derived from the config, so not stored in the state dict
            self.register_buffer("input_scale", renorm[0], persistent=False)
            self.register_buffer("input_shift", renorm[1], persistent=False)

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` ``(B, 3, S, S)`` -> head outputs (``coords`` ``(B, K, 2)`` float32 crop pixels, ...)."""
        if self.renormalise:
            x = x * self.input_scale + self.input_shift
        return self.head(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, 3, S, S)`` float32 -> ``(B, K, 2)`` float32 landmarks in crop pixels (flip test as configured)."""
        return self.predict(x, self.config.flip_test)

    def predict(self, x: torch.Tensor, flip_test: bool) -> torch.Tensor:
        """``x`` ``(B, 3, S, S)`` float32 -> ``(B, K, 2)`` float32 crop pixels; ``flip_test`` also runs the mirrored
        crop and averages it, un-mirrored and re-indexed with the scheme's left/right permutation."""
        coords = self.forward_train(x)["coords"]
        if not flip_test:
            return coords
        mirrored = self.forward_train(torch.flip(x, dims=[3]))["coords"][:, self.flip_index]
        mirrored = torch.stack([(x.shape[3] - 1) - mirrored[..., 0], mirrored[..., 1]], dim=-1)
        return 0.5 * (coords + mirrored)


def build_model(config: ModelConfig) -> LandmarkModel:
    """Build a fresh network from its config.

    Raises:
        PretrainedError: an offline ImageNet file fails its sha256 check or does not fit, or ``imagenet`` was
            asked with no offline file while ``HF_HUB_OFFLINE`` is set.
        RuntimeError: ``pretrained`` is true and the weights cannot be downloaded (the message says so).
        ValueError: the backbone lacks a feature map at the heatmap stride.
    """
    try:
        return LandmarkModel(config)
    except PretrainedError:
        raise
    except (OSError, RuntimeError) as e:
        if config.pretrained:
            raise RuntimeError(
                f"could not load pretrained weights for {config.backbone!r} (is the Hugging Face hub reachable?"
                f" set model.pretrained: false to train from scratch): {e}"
            ) from e
        raise


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))
