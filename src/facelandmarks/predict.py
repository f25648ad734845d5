"""``facelandmarks predict``: landmarks for photos, folders, GIFs and videos, each input's outputs apart.

For every input (folders are searched recursively for photos, GIFs and videos) the outputs are named
after the input's FULL file name (suffix included), under ``OUT/<its folder relative to the folder
given>``, so that ``x.jpg`` and ``x.png`` never write the same file:

* a photo ``x.jpg`` -> ``x.jpg.json`` (faces: box, score, 68 landmarks in photo pixels; see
  :func:`facelandmarks.inference.annotate.faces_json`), one ``x.jpg.<k>.pts`` per face (300-W format,
  1-based pixels as the 300-W files are) and ``x.jpg.annotated.png``;
* a GIF or video ``y.mp4`` -> ``y.mp4.jsonl`` (one JSON line per kept frame: frame index, time, and per
  face its track id, box, score and landmarks; see :func:`facelandmarks.video.frame_record`),
  ``y.mp4.json`` (the clip: size, frame rates, tracks) and ``y.mp4.annotated.gif``. Faces are TRACKED
  through the frames and their landmarks smoothed (:class:`facelandmarks.video.VideoLandmarker`, params.yaml
  ``video``).

Inputs given separately that would still share outputs (``a/x.jpg`` and ``b/x.jpg``, or two folders
holding the same relative path) keep as many of their parent folders as it takes to tell them apart
(``OUT/a/x.jpg.json``, ``OUT/b/x.jpg.json``); the same file named twice is processed once.

Photos are read with their EXIF orientation applied (coordinates are in the frame a viewer sees).
Everything goes through one :class:`facelandmarks.inference.FaceLandmarker`, the same predictor the
HTTP service uses. An unreadable or broken input is reported (file and reason) and skipped; the others
are still written, and nothing is written for the broken one.
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
from facelandmarks.inference.annotate import faces_json
from facelandmarks.inference.landmarker import FaceLandmarker
from facelandmarks.io.images import write_image
from facelandmarks.io.pts import write_pts
from facelandmarks.media import (
    MediaLimits,
    decode_photo,
    media_kind,
    open_clip,
    write_gif,
)
from facelandmarks.video.config import VideoParams

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
    """Expand the command line's paths and give every input file its own output base.

    Returns:
        ``([(file, output base relative to OUT)], [(path, reason)])``. The base is the file's full name
        (``x.jpg``), under its sub-folders when it was found in a folder given; bases that would be
        shared by different files get as many of their parent folders (from the real path) as needed to
        differ. Paths that do not exist, folders without media and files of an unknown kind are listed
        as failures; a file named twice is listed once.
    """
    found: list[tuple[Path, tuple[str, ...]]] = []
    failed: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(f: Path, rel: tuple[str, ...]) -> None:
        real = f.resolve()
        if real not in seen:
            seen.add(real)
            found.append((f, rel))

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and media_kind(f))
            if not files:
                failed.append((str(p), "no photo, GIF or video in this folder"))
            for f in files:
                add(f, f.relative_to(p).parts)
        elif p.is_file():
            if media_kind(p) is None:
                failed.append((str(p), f"unknown file type {p.suffix!r} (photos, GIFs and videos are read)"))
            else:
                add(p, (p.name,))
        else:
            failed.append((str(p), "no such file or folder"))
    return list(zip([f for f, _ in found], _unique_bases(found))), failed


def _unique_bases(found: list[tuple[Path, tuple[str, ...]]]) -> list[Path]:
    """Output bases that differ: colliding ones grow by parent folders of the real path, one at a time."""
    extra = [0] * len(found)
    ancestors = [f.resolve().parent.parts[1:] for f, _ in found]  # without the root

    def base(i: int) -> tuple[str, ...]:
        rel = found[i][1]
        anc = ancestors[i][: len(ancestors[i]) - (len(rel) - 1)] if len(rel) > 1 else ancestors[i]
        k = min(extra[i], len(anc))
        return tuple(anc[len(anc) - k :]) + rel if k else rel

    while True:
        groups: dict[tuple[str, ...], list[int]] = {}
        for i in range(len(found)):
            groups.setdefault(base(i), []).append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        grown = False
        for g in clashes:
            for i in g:
                if extra[i] < len(ancestors[i]):
                    extra[i] += 1
                    grown = True
        if not clashes or not grown:
            break
    return [Path(*base(i)) for i in range(len(found))]


def _named(base: Path, what: str) -> Path:
    """``base`` (``dir/x.jpg``) + ``.what`` -> ``dir/x.jpg.what``."""
    return base.with_name(f"{base.name}.{what}")


def predict_paths(
    landmarker: FaceLandmarker,
    paths: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    limits: MediaLimits | None = None,
    draw: bool = True,
    pts: bool = True,
    progress: bool = True,
    video: VideoParams | None = None,
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
        video: tracker and smoothing settings for GIFs and videos (params.yaml ``video``; defaults when None).
    Returns:
        :class:`PredictResult`; inputs that cannot be read or fail are in ``failed`` (with the reason),
        never raised (outputs are computed before the first file is written).
    """
    from facelandmarks.video import (
        VideoLandmarker,
        track_clip,
        tracks_summary,
        write_jsonl,
    )

    limits = limits or MediaLimits()
    out = Path(out_dir)
    files, failed = collect_inputs(paths)
    result = PredictResult(failed=list(failed))
    tracker = VideoLandmarker(landmarker, video)
    scheme = landmarker.scheme.name
    for path, rel in tqdm(files, desc="predict", unit="file", disable=not progress):
        base = out / rel
        try:
            # everything is computed before the first write: a failing input leaves no partial output
            if media_kind(path) == "image":
                image = decode_photo(path.read_bytes(), name=str(path), max_pixels=limits.max_pixels)
                faces = landmarker(image)
                drawn = draw_faces(image, faces, landmarker.scheme) if draw else None
                written = [_named(base, "json")]
                write_json(written[0], {"source": str(path), **faces_json(faces, image.shape, scheme)})
                if pts:
                    for k, f in enumerate(faces):
                        written.append(_named(base, f"{k}.pts"))
                        write_pts(written[-1], f.landmarks, one_based=True)
                if drawn is not None:
                    written.append(_named(base, "annotated.png"))
                    write_image(written[-1], drawn)
                n_faces = len(faces)
            else:
                clip = open_clip(path, limits)
                tracked = track_clip(tracker, clip, limits.max_side, draw=draw)
                written = [_named(base, "jsonl"), _named(base, "json")]
                write_jsonl(written[0], tracked.results)
                write_json(written[1], {
                    "source": str(path), "width": tracked.width, "height": tracked.height,
                    "source_fps": round(tracked.source_fps, 3), "fps": round(tracked.fps, 3), "step": tracked.step,
                    "truncated": tracked.truncated, "scheme": scheme, "frames": len(tracked.results),
                    "detector_runs": tracked.detector_runs, "smoothing": tracker.smoothing.enabled,
                    "frames_file": written[0].name, "tracks": tracks_summary(tracked.results),
                })
                if draw:
                    written.append(_named(base, "annotated.gif"))
                    write_gif(tracked.frames, written[-1], tracked.fps)
                n_faces = sum(len(r.faces) for r in tracked.results)
            result.written += written
            result.faces += n_faces
            result.inputs += 1
        except Exception as e:  # noqa: BLE001 - one broken input must not stop the others
            reason = str(e) if str(path) in str(e) else f"{type(e).__name__}: {e}"
            log.warning("predict: skipping %s: %s", path, reason)
            result.failed.append((str(path), reason))
    return result
