"""The real ``bentoml serve`` on 127.0.0.1: faces as JSON (one by one and adaptively batched), annotated PNG and
GIF, bad input answered 4xx."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from PIL import Image

from conftest import RAW, ROOT
from test_inference_media import bomb_png

DEMO = RAW / "demo" / "images"
VIDEO = RAW / "demo" / "video"
MAX_PIXELS = 3_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """``bentoml serve`` of this project's bentofile on a free port, with the tiny model and low limits."""
    tmp = tmp_path_factory.mktemp("serve")
    params = {"serve": {"model_uri": str(tiny_checkpoint), "device": "cpu", "num_threads": 1,
                        "limits": {"max_pixels": MAX_PIXELS, "max_frames": 4, "fps": 4, "max_side": 240}}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    port = _free_port()
    env = {**os.environ, "BENTOML_HOME": str(tmp / "bentoml"), "FACELANDMARKS_PARAMS": str(tmp / "params.yaml"),
           "BENTOML_DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("FACELANDMARKS_MODEL_URI", None)
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "bentoml"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"bentoml serve exited with {proc.returncode}:\n{(tmp / 'serve.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or busy loading the model
                pass
            if time.time() > deadline:
                raise AssertionError(f"bentoml serve not ready in 120 s:\n{(tmp / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _faces(url: str, data: bytes, name: str = "photo.jpg") -> requests.Response:
    return requests.post(f"{url}/faces", files={"image": (name, data)}, timeout=120)


@pytest.mark.slow
def test_serve_photos_bad_input_and_keep_serving(server):
    demo = (DEMO / "face_recognition__two_people.jpg").read_bytes()
    r = _faces(server, demo)
    assert r.status_code == 200, r.text
    faces = r.json()
    assert len(faces) == 2
    for f in faces:  # every face has 68 points inside its box
        x0, y0, x1, y1 = f["box"]
        pts = np.array(f["landmarks"])
        assert pts.shape == (68, 2) and 0 < f["score"] <= 1
        assert (pts[:, 0] >= x0).all() and (pts[:, 0] <= x1).all() and (pts[:, 1] >= y0).all() and (pts[:, 1] <= y1).all()

    garbage = np.random.default_rng(0).bytes(5000)
    r = _faces(server, garbage, "garbage.jpg")
    assert r.status_code == 400 and "not a readable image" in r.text
    r = _faces(server, bomb_png(), "bomb.png")  # a header claiming 50000 x 50000 pixels
    assert r.status_code == 413, r.text
    big = np.asarray(Image.open(DEMO / "facenet_pytorch__angelina_jolie.jpg").convert("RGB"))  # 1665 x 2048 > limit
    assert big.shape[0] * big.shape[1] > MAX_PIXELS
    r = _faces(server, (DEMO / "facenet_pytorch__angelina_jolie.jpg").read_bytes())
    assert r.status_code == 413 and "exceeds the limit" in r.text
    r = requests.post(f"{server}/faces", data=b"no multipart", timeout=30)
    assert 400 <= r.status_code < 500

    # still serving, and the same answer as before
    r = _faces(server, demo)
    assert r.status_code == 200 and r.json() == faces

    # a photo without a face: an empty list
    corner = np.asarray(Image.open(DEMO / "face_recognition__obama.jpg").convert("RGB"))[:60, :60]
    r = _faces(server, _png(corner), "corner.png")
    assert r.status_code == 200 and r.json() == []


def _assert_same_faces(got: list[dict], want: list[dict], atol: float = 1e-3) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g["box"], w["box"], atol=atol)
        np.testing.assert_allclose(g["landmarks"], w["landmarks"], atol=atol)
        assert abs(g["score"] - w["score"]) <= 1e-4


def _batched_calls(url: str) -> float:
    """How many calls of the batchable ``landmark_batch`` BentoML's dispatcher has made (from ``/metrics``)."""
    metrics = requests.get(f"{url}/metrics", timeout=30).text
    m = re.search(r'^bentoml_service_adaptive_batch_size_count\{[^}]*method_name="landmark_batch"[^}]*\} (\S+)$',
                  metrics, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.slow
def test_serve_adaptive_batching_answers_like_single_photos(server):
    """``/faces_batch``: concurrent requests merged by BentoML's dispatcher into one landmarking call answer what
    ``/faces`` answers for each photo; bad photos in the same batch get their own 4xx and fail nobody else."""
    names = ["face_recognition__obama.jpg", "face_recognition__two_people.jpg", "face_recognition__alex-lacamoire.png",
             "face_recognition__obama.jpg"]  # the same size twice: also batched through MTCNN together
    photos = [(DEMO / n).read_bytes() for n in names]
    single = {}
    for n, data in zip(names, photos):
        r = _faces(server, data, n)
        assert r.status_code == 200, r.text
        single[n] = r.json()
    assert [len(single[n]) for n in names] == [1, 2, 1, 1]

    uploads = [*zip(names, photos), ("garbage.jpg", np.random.default_rng(1).bytes(5000)), ("bomb.png", bomb_png())]
    calls_before = _batched_calls(server)

    def post(upload: tuple[str, bytes]) -> requests.Response:
        return requests.post(f"{server}/faces_batch", files={"images": upload}, timeout=300)

    with ThreadPoolExecutor(len(uploads)) as pool:
        answers = list(pool.map(post, uploads))
    for n, r in zip(names, answers):
        assert r.status_code == 200, (n, r.text)
        [faces] = r.json()
        _assert_same_faces(faces, single[n])
    garbage, bomb = answers[len(names):]
    assert garbage.status_code == 400 and "not a readable image" in garbage.text
    assert bomb.status_code == 413, bomb.text
    calls = _batched_calls(server) - calls_before  # 6 requests in fewer calls: some were landmarked together
    assert 0 < calls < len(uploads), f"{len(uploads)} concurrent requests took {calls} batched calls"

    # still serving; several photos in one request come back in order
    two = [("images", (n, d)) for n, d in zip(names[:2], photos[:2])]
    r = requests.post(f"{server}/faces_batch", files=two, timeout=300)
    assert r.status_code == 200, r.text
    got = r.json()
    assert len(got) == 2
    for n, faces in zip(names[:2], got):
        _assert_same_faces(faces, single[n])


@pytest.mark.slow
def test_serve_grayscale_rgba_16bit_and_exif_rotated(server):
    rgb = np.asarray(Image.open(DEMO / "face_recognition__obama.jpg").convert("RGB"))
    h, w = rgb.shape[:2]
    upright = _faces(server, _png(rgb)).json()
    assert len(upright) == 1
    variants = {
        "gray.png": _png(rgb.mean(axis=2).astype(np.uint8)),
        "rgba.png": _png(np.dstack([rgb, np.full((h, w), 255, np.uint8)])),
        "deep.png": _png((rgb[..., 1].astype(np.uint16) * 257)),
    }
    for name, data in variants.items():
        r = _faces(server, data, name)
        assert r.status_code == 200 and len(r.json()) == 1, (name, r.text)
    # stored rotated 90 degrees with EXIF orientation 6: the answer is in the upright (viewed) frame
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = _png(np.ascontiguousarray(np.rot90(rgb, k=1)), format="JPEG", exif=exif, quality=95)
    [face] = _faces(server, rotated, "rotated.jpg").json()
    np.testing.assert_allclose(face["box"], upright[0]["box"], atol=12)


@pytest.mark.slow
def test_serve_annotated_png_and_gif(server):
    r = requests.post(f"{server}/annotate", files={"image": ("p.jpg", (DEMO / "face_recognition__two_people.jpg").read_bytes())},
                      timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (1126, 661)

    video = (VIDEO / "face_recognition__short_hamilton_clip.mp4").read_bytes()
    r = requests.post(f"{server}/annotate_gif", files={"media": ("clip.mp4", video)}, timeout=300)
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.n_frames == 4 and max(im.size) == 240
    r = requests.post(f"{server}/annotate_gif", files={"media": ("x.mp4", b"\x00" * 3000)}, timeout=60)
    assert r.status_code == 400
    info = requests.post(f"{server}/info", json={}, timeout=30).json()
    assert info["scheme"] == "ibug68" and info["device"] == "cpu" and info["limits"]["max_pixels"] == MAX_PIXELS


@pytest.mark.slow
def test_bentoml_build_makes_a_bento(tmp_path):
    """``bentoml build`` of the project's bentofile: the service code (src layout) and params go into the Bento."""
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = str(Path(sys.executable).parent / "bentoml")
    proc = subprocess.run([bentoml, "build", "--output", "tag"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [bento] = list((tmp_path / "bentoml" / "bentos" / "facelandmarks").glob("*/bento.yaml"))
    src = bento.parent / "src"
    assert (src / "facelandmarks" / "serving" / "service.py").is_file() and (src / "params.yaml").is_file()
    meta = yaml.safe_load(bento.read_text())
    assert meta["service"] == "facelandmarks.serving.service:FaceLandmarks"
    assert {r["name"] for r in meta["schema"]["routes"]} >= {"faces", "faces_batch", "landmark_batch", "annotate",
                                                            "annotate_gif", "info"}
