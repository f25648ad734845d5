"""Settings of the ``augment`` stage (params.yaml ``augment``), one small model per transform.

Every transform has its own probability ``p``; set ``p: 0`` to switch it off.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from facelandmarks.params import StrictModel

__all__ = [
    "AffineParams",
    "FlipParams",
    "ColorParams",
    "BlurParams",
    "NoiseParams",
    "JpegParams",
    "OcclusionParams",
    "PreviewParams",
    "AugmentParams",
]


def _ordered(lo_hi: tuple, name: str = "range") -> tuple:
    """``(min, max)`` unchanged; ValueError when min > max (pydantic adds the field's path to the message)."""
    if lo_hi[0] > lo_hi[1]:
        raise ValueError(f"{name} {list(lo_hi)} has min > max")
    return lo_hi


#: ``(min, max)`` ranges, checked to be ordered.
FloatRange = Annotated[tuple[float, float], AfterValidator(_ordered)]
IntRange = Annotated[tuple[int, int], AfterValidator(_ordered)]


class AffineParams(StrictModel):
    """Rotation (degrees, +-), scale range, shift (fraction of the crop side, +-), about the crop centre."""

    p: float = Field(0.9, ge=0, le=1)
    rotate: float = Field(25.0, ge=0, le=180)
    scale: FloatRange = (0.9, 1.1)
    shift: float = Field(0.05, ge=0, le=0.5)

    @model_validator(mode="after")
    def _check(self) -> "AffineParams":
        if self.scale[0] <= 0:
            raise ValueError("augment.affine.scale must be positive")
        return self


class FlipParams(StrictModel):
    """Horizontal flip; landmarks are mirrored and re-indexed with the scheme's flip permutation."""

    p: float = Field(0.5, ge=0, le=1)


class ColorParams(StrictModel):
    """Brightness and contrast changes, each up to +- the given fraction."""

    p: float = Field(0.6, ge=0, le=1)
    brightness: float = Field(0.25, ge=0, le=1)
    contrast: float = Field(0.25, ge=0, le=1)


class BlurParams(StrictModel):
    """Gaussian blur, sigma range in pixels."""

    p: float = Field(0.2, ge=0, le=1)
    sigma: FloatRange = (0.3, 1.5)


class NoiseParams(StrictModel):
    """Gaussian noise, standard deviation range as a fraction of 255."""

    p: float = Field(0.2, ge=0, le=1)
    std: FloatRange = (0.02, 0.06)


class JpegParams(StrictModel):
    """JPEG compression artefacts, quality range."""

    p: float = Field(0.2, ge=0, le=1)
    quality: IntRange = (30, 90)


class OcclusionParams(StrictModel):
    """Occluding patches of one random colour each: count range and side range (fraction of the crop)."""

    p: float = Field(0.2, ge=0, le=1)
    holes: IntRange = (1, 2)
    size: FloatRange = (0.1, 0.3)


class PreviewParams(StrictModel):
    """The preview grid: ``faces`` rows of training faces, each with its variants."""

    faces: int = Field(6, ge=1)
    out: str = "reports/figures/augment_preview.png"


class AugmentParams(StrictModel):
    """The ``augment`` section of params.yaml.

    Attributes:
        variants: augmented variants per training face, written besides variant 0 (the crop itself).
        affine, flip, color, blur, noise, jpeg, occlusion: the transforms, applied in this order.
        crops, out_dir, table, report: input table and outputs (relative to the project root).
    """

    variants: int = Field(4, ge=0)
    affine: AffineParams = AffineParams()
    flip: FlipParams = FlipParams()
    color: ColorParams = ColorParams()
    blur: BlurParams = BlurParams()
    noise: NoiseParams = NoiseParams()
    jpeg: JpegParams = JpegParams()
    occlusion: OcclusionParams = OcclusionParams()
    preview: PreviewParams = PreviewParams()
    crops: str = "data/interim/crops.parquet"
    out_dir: str = "data/processed/augmented"
    table: str = "data/processed/augmented.parquet"
    report: str = "reports/augment.json"
