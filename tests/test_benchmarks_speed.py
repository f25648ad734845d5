"""Speed benchmark building blocks (benchmarks/speed.py) on the real demo media."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from benchmarks.speed import DEMO_VIDEO, SpeedOptions, end_to_end_speed, landmark_model_speed, read_frames, time_calls
from facelandmarks.baselines.dlib68 import DlibLandmarker
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.prediction import predict_crops
from facelandmarks.model.network import build_model


def test_time_calls_times_each_call_after_warmup():
    calls = []

    def f():
        calls.append(1)
        time.sleep(0.01)

    t = time_calls(f, runs=5, warmup=2)
    assert len(calls) == 7 and t.shape == (5,)
    assert (t >= 0.0095).all()


def test_reads_the_demo_video_frames(raw_dir):
    frames = read_frames(raw_dir.parent.parent / DEMO_VIDEO, max_frames=4)
    assert len(frames) == 4
    assert frames[0].shape == (360, 640, 3) and frames[0].dtype == np.uint8
    with pytest.raises(FileNotFoundError, match="no_such.mp4"):
        read_frames(raw_dir / "no_such.mp4")


def test_landmark_model_speed_reports_per_face_times():
    model = build_model(ModelConfig()).eval()
    crops = np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    calls = []

    def predict(batch):
        calls.append(len(batch))
        return predict_crops(model, batch, batch_size=32, device="cpu")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared CI machine: no thread oversubscription
    try:
        r = landmark_model_speed(predict, crops, "cpu", SpeedOptions(batch_sizes=(1, 4), runs=2, warmup=1))
    finally:
        torch.set_num_threads(threads)
    assert calls == [1] * 11 + [4] * 3  # warm-up + timed calls, batches cycle over the 3 crops
    assert set(r) == {"batch_1", "batch_4"}
    assert r["batch_1"]["runs"] == 10 and r["batch_4"]["runs"] == 2
    assert all(v["median_ms"] > 0 and v["p90_ms"] >= v["median_ms"] for v in r.values())


def test_dlib_end_to_end_on_video_frames_counts_faces(raw_dir):
    frames = read_frames(raw_dir.parent.parent / DEMO_VIDEO, max_frames=3)
    dlib = DlibLandmarker()
    r = end_to_end_speed(lambda f: len(dlib(f)[0]), frames, warmup=1)
    assert r["runs"] == 3 and r["frame_size"] == "640x360"
    expected = np.mean([len(dlib.detect(f)[0]) for f in frames])
    assert r["faces_per_frame"] == pytest.approx(expected) and expected > 0  # the clip shows a speaker
