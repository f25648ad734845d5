"""``facelandmarks predict``: photos, folders, GIFs and videos -> JSON, .pts, annotated PNG / GIF."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import RAW

DEMO = RAW / "demo" / "images"
VIDEO = RAW / "demo" / "video"


@pytest.mark.slow
def test_predict_photos_folder_video_and_a_broken_file(tiny_checkpoint, tmp_path, monkeypatch):
    from facelandmarks import FaceLandmarker
    from facelandmarks.cli import app
    from facelandmarks.io.images import read_image
    from facelandmarks.io.pts import read_pts

    folder = tmp_path / "in" / "photos"
    folder.mkdir(parents=True)
    for name in ("face_recognition__two_people.jpg", "face_recognition__alex-lacamoire.png"):
        shutil.copy(DEMO / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = tmp_path / "out"
    monkeypatch.setenv("FACELANDMARKS_PARAMS", str(tmp_path / "none.yaml"))  # defaults, no params file
    result = CliRunner().invoke(app, [
        "predict", str(tmp_path / "in"), str(VIDEO / "face_recognition__short_hamilton_clip.mp4"),
        "--model", str(tiny_checkpoint), "--out", str(out), "--device", "cpu", "--max-frames", "3", "--no-progress",
    ])
    assert result.exit_code == 1, result.output  # the broken file is reported, the rest is written
    assert "broken.jpg" in result.output

    two = json.loads((out / "photos" / "face_recognition__two_people.json").read_text())
    assert two["width"] == 1126 and two["height"] == 661 and len(two["faces"]) == 2
    # the same predictor as the Python API
    faces = FaceLandmarker.load(tiny_checkpoint, device="cpu")(read_image(DEMO / "face_recognition__two_people.jpg"))
    np.testing.assert_allclose(np.array(two["faces"][0]["landmarks"]), faces[0].landmarks, atol=0.01)
    # .pts files are 300-W files (1-based on disk): they read back as the JSON's 0-based points
    for k, face in enumerate(two["faces"]):
        np.testing.assert_allclose(read_pts(out / "photos" / f"face_recognition__two_people_{k}.pts"),
                                   np.array(face["landmarks"]), atol=0.01)
    with Image.open(out / "photos" / "face_recognition__two_people_annotated.png") as im:
        assert im.size == (1126, 661)
    assert (out / "photos" / "face_recognition__alex-lacamoire.json").is_file()  # an RGBA PNG

    clip = json.loads((out / "face_recognition__short_hamilton_clip.json").read_text())
    assert len(clip["frames"]) == 3 and clip["truncated"]
    with Image.open(out / "face_recognition__short_hamilton_clip_annotated.gif") as im:
        assert im.n_frames == 3 and max(im.size) <= 480
