"""``facelandmarks predict``: landmarks for photos, folders, GIFs and videos, written next to each other.

For every input (folders are searched recursively for photos, GIFs and videos) the outputs go to
``OUT/<path relative to the folder given>``:

* a photo ``x.jpg`` -> ``x.json`` (faces: box, score, 68 landmarks in photo pixels; see
  :func:`facelandmarks.inference.annotate.faces_json`), one ``x_<k>.pts`` per face (300-W format,
  1-based pixels as the 300-W files are) and ``x_annotated.png``;
* a GIF or video ``y.mp4`` -> ``y.json`` (faces per kept frame) and ``y_annotated.gif``.

Photos are read with their EXIF orientation applied (coordinates are in the frame a viewer sees).
Everything goes through one :class:`facelandmarks.inference.FaceLandmarker`, the same predictor the
HTTP service uses. An unreadable input is reported and skipped; the others are still written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from facelandmarks.draw import draw_faces
from facelandmarks.fsutil import write_json
from facelandmarks.inference.annotate import annotate_clip, clip_json, faces_json
from facelandmarks.inference.landmarker import FaceLandmarker
from facelandmarks.io.images import ImageReadError, write_image
from facelandmarks.io.pts import write_pts
from facelandmarks.media import MediaLimits, decode_photo, media_kind, open_clip, write_gif

__all__ = ["PredictResult", "collect_inputs", "predict_paths"]

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    """What a predict run did.

    Attributes:
        written: output files, in order.
        inputs: inputs processed successfully.
        faces: faces found over all photos and frames.
        failed: ``(input, reason)`` of inputs that were skipped.
    """

    written: list[Path] = field(default_factory=list)
    inputs: int = 0
    faces: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def collect_inputs(paths: Iterable[str | os.PathLike]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Expand the command line's paths.

    Returns:
        ``([(file, output stem relative to OUT)], [(path, reason)])``: files of folders (recursively,
        sorted) keep their sub-folders in the output; paths that do not exist or are of an unknown kind are
        listed as failures.
    """
    files: list[tuple[Path, Path]] = []
    failed: list[tuple[str, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and media_kind(f))
            if not found:
                failed.append((str(p), "no photo, GIF or video in this folder"))
            files += [(f, f.relative_to(p).with_suffix("")) for f in found]
        elif p.is_file():
            if media_kind(p) is None:
                failed.append((str(p), f"unknown file type {p.suffix!r} (photos, GIFs and videos are read)"))
            else:
                files.append((p, Path(p.stem)))
        else:
            failed.append((str(p), "no such file or folder"))
    return files, failed


def predict_paths(
    landmarker: FaceLandmarker,
    paths: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    limits: MediaLimits | None = None,
    draw: bool = True,
    pts: bool = True,
    progress: bool = True,
) -> PredictResult:
    """Predict every photo, GIF and video under ``paths`` and write the results under ``out_dir``.

    Args:
        landmarker: the predictor.
        paths: files and folders.
        out_dir: output folder (created).
        limits: pixel, frame and GIF size limits.
        draw: write annotated images / GIFs.
        pts: write one ``.pts`` file per face of a photo.
        progress: show a tqdm bar.
    Returns:
        :class:`PredictResult`; unreadable inputs are in ``failed``, never raised.
    """
    limits = limits or MediaLimits()
    out = Path(out_dir)
    files, failed = collect_inputs(paths)
    result = PredictResult(failed=list(failed))
    for path, stem in tqdm(files, desc="predict", unit="file", disable=not progress):
        base = out / stem
        try:
            if media_kind(path) == "image":
                image = decode_photo(path.read_bytes(), name=str(path), max_pixels=limits.max_pixels)
                faces = landmarker(image)
                write_json(base.with_suffix(".json"), {"source": str(path), **faces_json(faces, image.shape, landmarker.scheme.name)})
                result.written.append(base.with_suffix(".json"))
                if pts:
                    for k, f in enumerate(faces):
                        p = base.with_name(f"{base.name}_{k}.pts")
                        write_pts(p, f.landmarks, one_based=True)
                        result.written.append(p)
                if draw:
                    p = base.with_name(f"{base.name}_annotated.png")
                    write_image(p, draw_faces(image, faces, landmarker.scheme))
                    result.written.append(p)
                result.faces += len(faces)
            else:
                clip = open_clip(path, limits)
                annotated = annotate_clip(landmarker, clip, limits.max_side)
                write_json(base.with_suffix(".json"), {"source": str(path), **clip_json(annotated, landmarker.scheme.name)})
                result.written.append(base.with_suffix(".json"))
                if draw:
                    p = base.with_name(f"{base.name}_annotated.gif")
                    write_gif(annotated.frames, p, annotated.fps)
                    result.written.append(p)
                result.faces += sum(len(f) for f in annotated.faces)
            result.inputs += 1
        except (ImageReadError, OSError, ValueError) as e:
            log.warning("predict: skipping %s: %s", path, e)
            result.failed.append((str(path), str(e)))
    return result
