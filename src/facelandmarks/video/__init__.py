"""Video mode: face tracking with stable ids, One Euro smoothing, tracked clips and the live loop.

* :class:`VideoLandmarker` (:mod:`facelandmarks.video.tracker`): frames in, tracked faces out; MTCNN runs
  only every ``detect_every`` frames (backing off to ``detect_every_max`` while nothing changes), when a
  track's quality drops, or to confirm a missed track;
* :class:`FaceVerifier` (:mod:`facelandmarks.video.verify`): MTCNN's O-net on the tracks' boxes between
  detector runs (is the face still there?);
* :class:`LandmarkSmoother` (:mod:`facelandmarks.video.smoothing`): the One Euro filter per track;
* :func:`track_clip`, :func:`write_jsonl` (:mod:`facelandmarks.video.clips`): GIFs and videos for
  ``facelandmarks predict`` and ``POST /annotate_gif``;
* :func:`run_live` (:mod:`facelandmarks.video.live`): ``facelandmarks live`` (camera, file or stream);
* settings: the ``video`` section of params.yaml (:mod:`facelandmarks.video.config`).
"""

from facelandmarks.video.clips import (
    TrackedClip,
    draw_tracked,
    track_clip,
    tracks_summary,
    write_jsonl,
)
from facelandmarks.video.config import (
    SmoothingParams,
    TrackerParams,
    VideoParams,
    load_video_params,
)
from facelandmarks.video.smoothing import LandmarkSmoother
from facelandmarks.video.verify import FaceVerifier
from facelandmarks.video.tracker import (
    FrameResult,
    TrackedFace,
    VideoLandmarker,
    frame_record,
)

__all__ = [
    "FaceVerifier",
    "FrameResult",
    "LandmarkSmoother",
    "SmoothingParams",
    "TrackedClip",
    "TrackedFace",
    "TrackerParams",
    "VideoLandmarker",
    "VideoParams",
    "draw_tracked",
    "frame_record",
    "load_video_params",
    "track_clip",
    "tracks_summary",
    "write_jsonl",
]
