"""``facelandmarks predict``: photos, folders, GIFs and videos -> JSON, .pts, annotated PNG / GIF, tracked JSON lines."""

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
@pytest.mark.needs_data
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
        "--model", str(tiny_checkpoint), "--out", str(out), "--device", "cpu", "--max-frames", "6", "--fps", "30",
        "--no-progress",
    ])
    assert result.exit_code == 1, result.output  # the broken file is reported, the rest is written
    assert "broken.jpg" in result.output and "1 inputs skipped" in result.output
    assert not list(out.rglob("broken*"))  # nothing written for it

    two = json.loads((out / "photos" / "face_recognition__two_people.jpg.json").read_text())
    # the same predictor as the Python API
    from facelandmarks.serving.config import load_serve_params

    # the CLI answers what the service answers: the model's detector with serve.detect_min_score over it
    floor = load_serve_params().detect_min_score
    faces = FaceLandmarker.load(tiny_checkpoint, device="cpu", min_score=floor)(read_image(DEMO / "face_recognition__two_people.jpg"))
    assert two["width"] == 1126 and two["height"] == 661 and len(two["faces"]) == len(faces) >= 2
    np.testing.assert_allclose(np.array(two["faces"][0]["landmarks"]), faces[0].landmarks, atol=0.01)
    # .pts files are 300-W files (1-based on disk): they read back as the JSON's 0-based points
    for k, face in enumerate(two["faces"]):
        np.testing.assert_allclose(read_pts(out / "photos" / f"face_recognition__two_people.jpg.{k}.pts"),
                                   np.array(face["landmarks"]), atol=0.01)
    with Image.open(out / "photos" / "face_recognition__two_people.jpg.annotated.png") as im:
        assert im.size == (1126, 661)
    assert (out / "photos" / "face_recognition__alex-lacamoire.png.json").is_file()  # an RGBA PNG

    # the video: tracked, smoothed, one JSON line per kept frame
    name = "face_recognition__short_hamilton_clip.mp4"
    clip = json.loads((out / f"{name}.json").read_text())
    assert clip["frames"] == 6 and clip["truncated"] and clip["step"] == 1 and clip["smoothing"] is True
    assert clip["width"] == 640 and clip["height"] == 360 and 1 <= clip["detector_runs"] <= 6
    records = [json.loads(line) for line in (out / clip["frames_file"]).read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(6))
    assert records[1]["time"] == pytest.approx(1 / clip["source_fps"], abs=1e-3)
    assert records[0]["faces"] and all(len(f["landmarks"]) == 68 for r in records for f in r["faces"])
    ids = {f["track"] for r in records for f in r["faces"]}
    assert ids == {t["track"] for t in clip["tracks"]} and min(ids) == 1
    with Image.open(out / f"{name}.annotated.gif") as im:
        assert im.n_frames == 6 and max(im.size) <= 480


@pytest.mark.slow
@pytest.mark.needs_data
def test_outputs_of_two_inputs_never_overwrite_each_other(tiny_checkpoint, tmp_path, monkeypatch):
    """``a/x.jpg`` and ``b/x.jpg`` given as files, ``x.jpg`` and ``x.png`` in one folder, the same file
    twice, and a GIF beside a photo of the same name: every input keeps its own outputs."""
    from facelandmarks.cli import app
    from facelandmarks.io.images import read_image
    from facelandmarks.media import resize_max_side, write_gif

    obama, biden = DEMO / "face_recognition__obama.jpg", DEMO / "face_recognition__biden.jpg"
    for d, src in (("a", obama), ("b", biden)):
        (tmp_path / d).mkdir()
        shutil.copy(src, tmp_path / d / "x.jpg")
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(obama, folder / "x.jpg")
    Image.open(biden).save(folder / "x.png")
    small = resize_max_side(read_image(obama), 160)
    write_gif([small, small], folder / "x.gif", fps=5)
    out = tmp_path / "out"
    monkeypatch.setenv("FACELANDMARKS_PARAMS", str(tmp_path / "none.yaml"))
    result = CliRunner().invoke(app, [
        "predict", str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg"), str(folder), str(folder / "x.png"),
        "--model", str(tiny_checkpoint), "--out", str(out), "--device", "cpu", "--no-progress", "--no-pts",
    ])
    assert result.exit_code == 0, result.output
    got = {p.relative_to(out).as_posix() for p in out.rglob("*.json")}
    # the three x.jpg keep one parent folder each; x.png and x.gif differ from them by their suffix
    assert got == {"a/x.jpg.json", "b/x.jpg.json", "folder/x.jpg.json", "x.png.json", "x.gif.json"}, got
    sources = {k: json.loads((out / k).read_text())["source"] for k in got}
    assert len(set(sources.values())) == 5  # five different inputs, five outputs
    assert sources["a/x.jpg.json"].endswith("a/x.jpg") and sources["b/x.jpg.json"].endswith("b/x.jpg")
    w_obama = json.loads((out / "a/x.jpg.json").read_text())["width"]
    w_biden = json.loads((out / "b/x.jpg.json").read_text())["width"]
    assert (w_obama, w_biden) == (read_image(obama).shape[1], read_image(biden).shape[1])
    assert (out / "x.gif.jsonl").is_file() and (out / "x.gif.annotated.gif").is_file()
    assert "5 inputs" in result.output  # x.png named twice is processed once


def test_unique_output_bases_grow_only_where_needed(tmp_path):
    from facelandmarks.predict import collect_inputs

    for rel in ("p/q/x.jpg", "r/q/x.jpg", "p/y.jpg", "s/sub/z.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"not read here")
    files, failed = collect_inputs([tmp_path / "p/q/x.jpg", tmp_path / "r/q/x.jpg", tmp_path / "p/y.jpg",
                                    tmp_path / "s", tmp_path / "missing.jpg", tmp_path / "p/y.jpg"])
    bases = {f.relative_to(tmp_path).as_posix(): b.as_posix() for f, b in files}
    assert bases == {"p/q/x.jpg": "p/q/x.jpg", "r/q/x.jpg": "r/q/x.jpg", "p/y.jpg": "y.jpg", "s/sub/z.jpg": "sub/z.jpg"}
    assert failed == [(str(tmp_path / "missing.jpg"), "no such file or folder")]
