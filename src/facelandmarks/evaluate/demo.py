"""README figures: an annotated demo photo and an annotated demo GIF, made by the evaluated model.

Only the demo media (``data/raw/demo``) are used: InfAnFace photos are of infants and never go into
documentation.
"""

from __future__ import annotations

from pydantic import Field

from facelandmarks.draw import draw_faces
from facelandmarks.fsutil import atomic_path
from facelandmarks.inference.annotate import annotate_clip
from facelandmarks.inference.landmarker import FaceLandmarker
from facelandmarks.io.images import read_image, write_image
from facelandmarks.media import MediaLimits, open_clip, resize_max_side, write_gif
from facelandmarks.params import StrictModel

__all__ = ["DemoParams", "make_demo_figures"]


class DemoParams(StrictModel):
    """``evaluate.demo``: which demo media to annotate and how large the figures are.

    Attributes:
        photo: a demo photo (empty: no photo figure).
        video: a demo video or GIF (empty: no GIF).
        max_frames, fps, max_side: the GIF's frames, frame rate and longer side (keep it small for a README).
        photo_max_side: longer side of the annotated photo.
        photo_out, gif_out: where the figures go.
    """

    photo: str = "data/raw/demo/images/facenet_pytorch__multiface.jpg"
    video: str = "data/raw/demo/video/face_recognition__short_hamilton_clip.mp4"
    max_frames: int = Field(24, ge=1)
    fps: float = Field(8.0, gt=0)
    max_side: int = Field(360, ge=32)
    photo_max_side: int = Field(800, ge=32)
    photo_out: str = "reports/figures/demo_annotated.png"
    gif_out: str = "reports/figures/demo.gif"


def make_demo_figures(landmarker: FaceLandmarker, params: DemoParams) -> dict[str, int]:
    """Annotate the demo photo and video with ``landmarker`` (the product's own path) and write the figures.

    Returns:
        ``{"demo_photo_faces": n, "demo_gif_frames": m}``.
    Raises:
        facelandmarks.io.images.ImageReadError: an unreadable demo file.
    """
    out: dict[str, int] = {}
    if params.photo:
        image = read_image(params.photo)
        faces = landmarker(image)
        drawn = resize_max_side(draw_faces(image, faces, landmarker.scheme), params.photo_max_side)
        with atomic_path(params.photo_out) as tmp:
            write_image(tmp, drawn)
        out["demo_photo_faces"] = len(faces)
    if params.video:
        clip = open_clip(params.video, MediaLimits(max_frames=params.max_frames, fps=params.fps))
        result = annotate_clip(landmarker, clip, params.max_side)
        write_gif(result.frames, params.gif_out, result.fps)
        out["demo_gif_frames"] = len(result.frames)
    return out
