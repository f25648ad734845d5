"""Media for inference: GIF/video frames within limits, GIF writing, photo decoding, drawing, annotated clips."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import RAW

pytestmark = pytest.mark.needs_data  # reads data/raw (dvc pull); `make unit` deselects it

VIDEO = RAW / "demo" / "video"
DEMO = RAW / "demo" / "images"


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header claiming a huge image (no pixel data): a decompression-bomb probe."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_video_frames_are_subsampled_and_capped():
    from facelandmarks.media import MediaLimits, open_clip

    clip = open_clip(VIDEO / "face_recognition__short_hamilton_clip.mp4", MediaLimits(max_frames=5, fps=5))
    frames = list(clip.frames)
    assert len(frames) == 5 and clip.kind == "video" and clip.truncated
    assert frames[0].shape == (clip.height, clip.width, 3) and frames[0].dtype == np.uint8
    assert clip.step == round(clip.source_fps / 5) and clip.fps == pytest.approx(clip.source_fps / clip.step)


def test_gif_round_trip_and_limits(tmp_path):
    from facelandmarks.io.images import read_image
    from facelandmarks.media import (
        MediaLimits,
        MediaReadError,
        MediaTooLargeError,
        open_clip,
        resize_max_side,
        write_gif,
    )

    photo = resize_max_side(read_image(DEMO / "face_recognition__two_people.jpg"), 200)
    frames = [np.roll(photo, 10 * k, axis=1) for k in range(6)]
    gif = tmp_path / "clip.gif"
    write_gif(frames, gif, fps=10)
    with Image.open(gif) as im:
        assert im.n_frames == 6 and im.size == (photo.shape[1], photo.shape[0]) and im.info["duration"] == 100
    clip = open_clip(gif, MediaLimits(max_frames=4, fps=10))
    got = list(clip.frames)
    assert len(got) == 4 and clip.kind == "gif" and clip.truncated
    assert np.abs(got[1].astype(int) - frames[1].astype(int)).mean() < 12  # palette quantisation only

    with pytest.raises(MediaTooLargeError, match="exceed"):
        open_clip(gif, MediaLimits(max_pixels=100))
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(MediaReadError, match="not a readable image, GIF or video"):
        open_clip(tmp_path / "noise.mp4")
    with pytest.raises(MediaReadError, match="no such file"):
        open_clip(tmp_path / "missing.gif")


def test_decode_photo_exif_modes_and_bombs():
    from facelandmarks.io.images import ImageReadError
    from facelandmarks.media import MediaTooLargeError, decode_photo

    rgb = np.asarray(Image.open(DEMO / "face_recognition__obama.jpg").convert("RGB"))
    h, w = rgb.shape[:2]
    # stored rotated 90 degrees with EXIF orientation 6 (rotate 90 CW to view): decoded upright
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, k=1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", exif=exif, quality=95)
    upright = decode_photo(buf.getvalue())
    assert upright.shape == (h, w, 3)
    assert np.abs(upright.astype(int) - rgb.astype(int)).mean() < 6

    for mode, arr in (("L", rgb.mean(axis=2).astype(np.uint8)), ("RGBA", np.dstack([rgb, np.full((h, w), 200, np.uint8)])),
                      ("I;16", (rgb[..., 0].astype(np.uint16) * 257))):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        out = decode_photo(buf.getvalue(), name=mode)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8

    with pytest.raises(MediaTooLargeError):
        decode_photo(bomb_png())
    with pytest.raises(MediaTooLargeError, match="exceeds the limit of 1000 pixels"):
        decode_photo((DEMO / "face_recognition__obama.jpg").read_bytes(), max_pixels=1000)
    with pytest.raises(ImageReadError, match="not a readable image"):
        decode_photo(b"GIF89a but not really", name="upload")


@pytest.mark.slow
def test_draw_faces_marks_the_landmarks(tiny_checkpoint):
    from facelandmarks import FaceLandmarker
    from facelandmarks.draw import draw_faces
    from facelandmarks.io.images import read_image

    lm = FaceLandmarker.load(tiny_checkpoint, device="cpu")
    image = read_image(DEMO / "face_recognition__two_people.jpg")
    faces = lm(image)
    drawn = draw_faces(image, faces, lm.scheme)
    assert drawn.shape == image.shape and not np.shares_memory(drawn, image)
    changed = np.any(drawn != image, axis=2)
    for f in faces:  # pixels under the landmarks were painted
        x, y = np.round(f.landmarks).astype(int).T
        ok = (x >= 0) & (y >= 0) & (x < image.shape[1]) & (y < image.shape[0])
        assert changed[y[ok], x[ok]].mean() > 0.8
    assert not changed[int(max(f.box[3] for f in faces)) + 40 :].any()  # nothing drawn far below the faces
    with pytest.raises(ValueError, match="do not fit"):
        draw_faces(image, [type("F", (), {"box": faces[0].box, "score": 1.0, "landmarks": np.zeros((5, 2))})()], lm.scheme)


@pytest.mark.slow
def test_annotate_clip_from_a_real_video(tiny_checkpoint):
    from facelandmarks import FaceLandmarker
    from facelandmarks.inference.annotate import annotate_clip, clip_json
    from facelandmarks.media import MediaLimits, open_clip

    lm = FaceLandmarker.load(tiny_checkpoint, device="cpu")
    clip = open_clip(VIDEO / "face_recognition__short_hamilton_clip.mp4", MediaLimits(max_frames=3, fps=2))
    result = annotate_clip(lm, clip, max_side=200, chunk=2)
    assert len(result.frames) == len(result.faces) == 3
    assert max(result.frames[0].shape[:2]) == 200
    assert all(len(f) >= 1 for f in result.faces)  # the speaker is found in every frame
    j = clip_json(result)
    assert [fr["index"] for fr in j["frames"]] == [0, clip.step, 2 * clip.step]
    assert len(j["frames"][0]["faces"][0]["landmarks"]) == 68


@pytest.mark.slow
def test_track_clip_of_a_gif_draws_track_ids_and_writes_json_lines(tiny_checkpoint, tmp_path):
    """A GIF through the tracker (what ``predict`` and ``/annotate_gif`` do): drawn frames, one JSON line per frame."""
    import json

    from facelandmarks import FaceLandmarker
    from facelandmarks.io.images import read_image
    from facelandmarks.media import MediaLimits, open_clip, resize_max_side, write_gif
    from facelandmarks.video import (
        VideoLandmarker,
        track_clip,
        tracks_summary,
        write_jsonl,
    )

    photo = resize_max_side(read_image(DEMO / "face_recognition__two_people.jpg"), 400)
    write_gif([np.roll(photo, 4 * k, axis=1) for k in range(4)], tmp_path / "clip.gif", fps=10)
    clip = open_clip(tmp_path / "clip.gif", MediaLimits(max_frames=10, fps=10))
    lm = FaceLandmarker.load(tiny_checkpoint, device="cpu")
    result = track_clip(VideoLandmarker(lm), clip, max_side=200)
    assert len(result.results) == len(result.frames) == 4 and max(result.frames[0].shape[:2]) == 200
    assert result.results[0].detector and result.detector_runs >= 1
    assert [r.index for r in result.results] == [0, 1, 2, 3]
    first = next(open_clip(tmp_path / "clip.gif", MediaLimits(max_frames=1, fps=10)).frames)
    n = len(lm(first))  # the two people (and whatever else MTCNN finds in the photo)
    assert n >= 2 and {f.track_id for f in result.results[0].faces} == set(range(1, n + 1))
    summary = tracks_summary(result.results)
    assert [t["track"] for t in summary][:n] == list(range(1, n + 1)) and summary[0]["first"] == 0
    write_jsonl(tmp_path / "out" / "clip.jsonl", result.results)
    lines = (tmp_path / "out" / "clip.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[2])["frame"] == 2
    assert json.loads(lines[0])["time"] == 0.0 and json.loads(lines[1])["time"] == pytest.approx(0.1)
    assert len(json.loads(lines[0])["faces"][0]["landmarks"]) == 68
