"""The vectorised MTCNN cascade equals facenet-pytorch's, bit for bit, on real photos of every data set."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.nn.functional import interpolate

from facelandmarks.detect.cascade import area_resample, summed_area_table
from facelandmarks.detect.mtcnn import DetectorConfig, FaceDetector
from facelandmarks.io.images import read_image


def _torch_area(image: np.ndarray, y0: int, y1: int, x0: int, x1: int, oh: int, ow: int) -> np.ndarray:
    """PyTorch's area resampling of one rectangle, as facenet-pytorch calls it (channels-last float32 photo)."""
    photo = torch.as_tensor(image[None]).permute(0, 3, 1, 2).float()
    return interpolate(photo[:, :, y0:y1, x0:x1], size=(oh, ow), mode="area")[0].permute(1, 2, 0).numpy()


def test_summed_area_table_known_answer():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(1, 2, 3, 3)
    t = summed_area_table(img)
    assert t.shape == (1, 3, 4, 3) and t.dtype == np.int32
    assert np.all(t[0, 0] == 0) and np.all(t[0, :, 0] == 0)
    assert np.array_equal(t[0, 2, 3], img[0].sum((0, 1)))
    assert np.array_equal(t[0, 1, 2], img[0, :1, :2].sum((0, 1)))


def test_area_resample_known_answer():
    img = np.zeros((1, 4, 4, 3), np.uint8)
    img[0, :2, :2] = 100  # top-left 2x2 block
    img[0, 3, 3] = 40
    out = area_resample(summed_area_table(img), np.array([0]), np.array([0]), np.array([4]), np.array([0]),
                        np.array([4]), 2, 2)
    assert out.shape == (1, 2, 2, 3) and out.dtype == np.float32
    assert np.array_equal(out[0, :, :, 0], np.array([[100, 0], [0, 10]], np.float32))


def test_area_resample_equals_torch_bit_for_bit():
    rng = np.random.default_rng(0)
    photos = rng.integers(0, 256, (2, 300, 260, 3), dtype=np.uint8)
    table = summed_area_table(photos)
    k = 200
    image = rng.integers(0, 2, k)
    y0, x0 = rng.integers(0, 250, k), rng.integers(0, 210, k)
    y1 = np.minimum(300, y0 + rng.integers(1, 200, k))  # 1-px rectangles (enlarged) to 199-px ones (shrunk)
    x1 = np.minimum(260, x0 + rng.integers(1, 200, k))
    for size in (24, 48):
        ours = area_resample(table, image, y0, y1, x0, x1, size, size)
        for i in range(k):
            ref = _torch_area(photos[image[i]], y0[i], y1[i], x0[i], x1[i], size, size)
            assert np.array_equal(ours[i], ref), (size, i, y0[i], y1[i], x0[i], x1[i])
    for scale in (0.6, 0.6 * 0.709, 0.05, 1.3):  # whole-photo pyramid levels of non-integer ratios (and enlarged)
        oh, ow = int(300 * scale + 1), int(260 * scale + 1)
        full = area_resample(table, np.array([0, 1]), np.zeros(2, int), np.full(2, 300), np.zeros(2, int),
                             np.full(2, 260), oh, ow)
        assert full.shape == (2, oh, ow, 3) and full.dtype == np.float32
        for i in range(2):
            assert np.array_equal(full[i], _torch_area(photos[i], 0, 300, 0, 260, oh, ow))


def test_summed_area_table_of_a_large_photo_is_int64_and_exact():
    big = np.full((1, 3000, 2900, 3), 255, np.uint8)  # 8.7 Mpx: the total overflows int32
    t = summed_area_table(big)
    assert t.dtype == np.int64
    assert t[0, -1, -1, 0] == 255 * 3000 * 2900
    out = area_resample(t, np.array([0]), np.array([10]), np.array([2990]), np.array([5]), np.array([2895]), 48, 48)
    assert np.all(out == 255.0)


def _facenet(det: FaceDetector, batch: np.ndarray) -> list[tuple]:
    """facenet-pytorch's own ``MTCNN.detect`` (a fresh instance, channels-last weights as FaceDetector runs them)
    on a batch, as float32 arrays (empty when it finds nothing)."""
    from facenet_pytorch import MTCNN

    c = det.config
    ref = MTCNN(keep_all=True, min_face_size=c.min_face_size, thresholds=list(c.thresholds), factor=c.factor,
                select_largest=False, device="cpu").eval().to(memory_format=torch.channels_last)
    boxes, probs, points = ref.detect(batch, landmarks=True)
    out = []
    for b, p, q in zip(boxes, probs, points):
        if b is None:
            out.append((np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)))
        else:
            out.append((np.asarray(b, np.float32), np.asarray(p, np.float32), np.asarray(q, np.float32)))
    return out


def _real_photos(raw_dir) -> list[np.ndarray]:
    """Photos of every kind the data has: AFW (several faces per photo), HELEN, InfAnFace, YouTube-Faces frames
    (small, equal sizes: batched), caricatures, the demo photos; each also rotated 20 degrees."""
    paths = (sorted((raw_dir / "300w" / "afw").glob("*.jpg"))[:4] + sorted((raw_dir / "300w" / "helen_train").glob("*.jpg"))[:3]
             + sorted((raw_dir / "infanface" / "images").rglob("*.jpg"))[:3]
             + sorted((raw_dir / "youtube_faces68" / "test").glob("*.jpg"))[:8]
             + sorted((raw_dir / "caricature").glob("*.jpg"))[:2] + sorted((raw_dir / "demo" / "images").glob("*.jpg"))[:3])
    photos = []
    for p in paths:
        img = read_image(p)
        s = 640 / max(img.shape[:2])
        if s < 1:
            img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
        photos += [img, cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), 20.0, 1.0), (w, h))]
    return photos


@pytest.mark.parametrize("thresholds", [(0.3, 0.4, 0.4), (0.6, 0.7, 0.7)])  # the project's and facenet-pytorch's
def test_cascade_equals_facenet_pytorch_on_real_photos(raw_dir, thresholds):
    torch.set_num_threads(1)
    det = FaceDetector(DetectorConfig(thresholds=thresholds, device="cpu"))
    groups: dict[tuple, list[np.ndarray]] = {}
    for img in _real_photos(raw_dir):
        groups.setdefault(img.shape, []).append(img)
    groups[(64, 80, 3)] = [np.full((64, 80, 3), 128, np.uint8)]  # no face at all
    photos = faces = 0
    for same_size in groups.values():
        batch = np.stack(same_size[:8])
        for ours, ref in zip(det._cascade(batch), _facenet(det, batch), strict=True):
            for a, b in zip(ours, ref, strict=True):
                assert a.dtype == np.float32 and b.dtype == np.float32
                assert np.array_equal(a, b)
            photos += 1
            faces += len(ref[0])
    assert photos >= 40 and faces >= 40  # the comparison covered real faces, not only empty answers
    assert max(len(v) for v in groups.values()) > 1  # and a batch of several photos


def test_cascade_rejects_a_non_uint8_batch():
    det = FaceDetector(DetectorConfig(device="cpu"))
    with pytest.raises(ValueError, match="uint8"):
        det._cascade(np.zeros((1, 32, 32, 3), np.float32))

