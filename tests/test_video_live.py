"""``facelandmarks live``: a video file as the camera stand-in, written to an annotated video and JSON lines."""

from __future__ import annotations

import json

import cv2
import pytest
from typer.testing import CliRunner

from conftest import RAW

VIDEO = RAW / "demo" / "video" / "face_recognition__short_hamilton_clip.mp4"
pytestmark = pytest.mark.needs_data  # reads data/raw (dvc pull); `make unit` deselects it


@pytest.mark.slow
def test_live_on_a_video_file_writes_the_annotated_video_and_prints_fps(tiny_checkpoint, tmp_path, monkeypatch):
    from facelandmarks.cli import app

    monkeypatch.setenv("FACELANDMARKS_PARAMS", str(tmp_path / "none.yaml"))  # default params
    out, lines = tmp_path / "live" / "annotated.mp4", tmp_path / "live" / "frames.jsonl"
    result = CliRunner().invoke(app, [
        "live", str(VIDEO), "--model", str(tiny_checkpoint), "--device", "cpu", "--max-frames", "12",
        "--out", str(out), "--jsonl", str(lines), "--no-display", "--threads", "1",
    ])
    assert result.exit_code == 0, result.output
    assert "12 frames in" in result.output and " fps" in result.output  # the speed is printed

    cap = cv2.VideoCapture(str(out))
    n, size = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, size = n + 1, frame.shape
    cap.release()
    assert n == 12 and size == (360, 640, 3)

    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(12))
    assert records[0]["detector"] and records[0]["faces"]  # the speaker is found at once
    assert records[5]["time"] == pytest.approx(5 / 29.97, abs=1e-3)
    first = {f["track"] for f in records[0]["faces"]}
    assert first == set(range(1, len(first) + 1))
    assert all(len(f["landmarks"]) == 68 for r in records for f in r["faces"])
    assert not list(out.parent.glob(".*tmp*"))  # atomic writes leave no temporary file


@pytest.mark.slow
def test_live_refuses_a_missing_source_and_an_unknown_output_type(tiny_checkpoint, tmp_path, monkeypatch):
    from facelandmarks.cli import app

    monkeypatch.setenv("FACELANDMARKS_PARAMS", str(tmp_path / "none.yaml"))
    base = ["--model", str(tiny_checkpoint), "--device", "cpu", "--no-display"]
    r = CliRunner().invoke(app, ["live", str(tmp_path / "nothing.mp4"), *base])
    assert r.exit_code == 2 and "nothing.mp4: no such file" in r.output
    (tmp_path / "noise.mp4").write_bytes(b"\x00" * 4000)
    r = CliRunner().invoke(app, ["live", str(tmp_path / "noise.mp4"), *base])
    assert r.exit_code == 2 and "cannot open" in r.output
    r = CliRunner().invoke(app, ["live", str(VIDEO), *base, "--out", str(tmp_path / "x.gif")])
    assert r.exit_code == 2 and "unknown video type '.gif'" in r.output
    assert not (tmp_path / "x.gif").exists()


@pytest.mark.slow
def test_asking_for_a_window_without_a_display_says_so_and_runs_headless(tiny_checkpoint, tmp_path, monkeypatch):
    from facelandmarks.cli import app

    monkeypatch.setenv("FACELANDMARKS_PARAMS", str(tmp_path / "none.yaml"))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    r = CliRunner().invoke(app, ["live", str(VIDEO), "--model", str(tiny_checkpoint), "--device", "cpu",
                                 "--display", "--max-frames", "2"])
    assert r.exit_code == 0, r.output
    assert "no display here" in r.output and "2 frames in" in r.output


@pytest.mark.slow
def test_live_and_predict_run_an_exported_onnx_network(tiny_checkpoint, tmp_path, monkeypatch):
    """``--model model.onnx`` (from ``facelandmarks export``, here without the flip test as video mode runs it) runs
    on ONNX Runtime in ``live`` and ``predict``, with the checkpoint's points within the export's 0.05 px; a file
    that is not an ONNX model is refused with exit 2 naming it."""
    from facelandmarks.cli import app
    from facelandmarks.inference.onnx_runtime import export_onnx

    monkeypatch.setenv("FACELANDMARKS_PARAMS", str(tmp_path / "none.yaml"))
    onnx = export_onnx(tiny_checkpoint, tmp_path / "video.onnx", flip_test=False)
    runs = {}
    for name, model in (("onnx", onnx), ("torch", tiny_checkpoint)):
        lines = tmp_path / f"{name}.jsonl"
        r = CliRunner().invoke(app, ["live", str(VIDEO), "--model", str(model), "--device", "cpu", "--max-frames", "6",
                                     "--jsonl", str(lines), "--no-display", "--threads", "1", "--no-smooth"])
        assert r.exit_code == 0, r.output
        runs[name] = [json.loads(line) for line in lines.read_text().splitlines()]
    frame0 = {"onnx": runs["onnx"][0]["faces"], "torch": runs["torch"][0]["faces"]}
    assert frame0["onnx"] and len(frame0["onnx"]) == len(frame0["torch"])
    for a, b in zip(frame0["onnx"], frame0["torch"]):  # the detector's boxes, one network pass each
        assert abs(a["landmarks"][30][0] - b["landmarks"][30][0]) < 0.06 and abs(a["landmarks"][30][1] - b["landmarks"][30][1]) < 0.06
    photo = RAW / "demo" / "images" / "face_recognition__obama.jpg"
    r = CliRunner().invoke(app, ["predict", str(photo), "--model", str(onnx), "--device", "cpu", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "p" / "face_recognition__obama.jpg.json").read_text())["faces"]
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    r = CliRunner().invoke(app, ["predict", str(photo), "--model", str(bad), "--device", "cpu", "--out", str(tmp_path / "q")])
    assert r.exit_code == 2 and "broken.onnx" in r.output
