"""Settings of the ``augment`` stage (params.yaml ``augment``), one small model per transform.

Every transform has its own probability ``p``; set ``p: 0`` to switch it off.
"""

from __future__ import annotations

from pydantic import Field, model_validator

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


def _ordered(lo_hi: tuple[float, float], name: str) -> None:
    if lo_hi[0] > lo_hi[1]:
        raise ValueError(f"{name}: range {list(lo_hi)} has min > max")


class AffineParams(StrictModel):
    """Rotation (degrees, +-), scale range, shift (fraction of the crop side, +-), about the crop centre."""

    p: float = Field(0.9, ge=0, le=1)
    rotate: float = Field(25.0, ge=0, le=180)
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = Field(0.05, ge=0, le=0.5)

    @model_validator(mode="after")
    def _check(self) -> "AffineParams":
        _ordered(self.scale, "augment.affine.scale")
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
    sigma: tuple[float, float] = (0.3, 1.5)

    @model_validator(mode="after")
    def _check(self) -> "BlurParams":
        _ordered(self.sigma, "augment.blur.sigma")
        return self


class NoiseParams(StrictModel):
    """Gaussian noise, standard deviation range as a fraction of 255."""

    p: float = Field(0.2, ge=0, le=1)
    std: tuple[float, float] = (0.02, 0.06)

    @model_validator(mode="after")
    def _check(self) -> "NoiseParams":
        _ordered(self.std, "augment.noise.std")
        return self


class JpegParams(StrictModel):
    """JPEG compression artefacts, quality range."""

    p: float = Field(0.2, ge=0, le=1)
    quality: tuple[int, int] = (30, 90)

    @model_validator(mode="after")
    def _check(self) -> "JpegParams":
        _ordered(self.quality, "augment.jpeg.quality")
        return self


class OcclusionParams(StrictModel):
    """Occluding patches of one random colour each: count range and side range (fraction of the crop)."""

    p: float = Field(0.2, ge=0, le=1)
    holes: tuple[int, int] = (1, 2)
    size: tuple[float, float] = (0.1, 0.3)

    @model_validator(mode="after")
    def _check(self) -> "OcclusionParams":
        _ordered(self.holes, "augment.occlusion.holes")
        _ordered(self.size, "augment.occlusion.size")
        return self


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
