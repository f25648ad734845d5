"""Readers of the ``youtube_faces68`` CSV and ``caricature`` .txt formats, on the real files and broken copies."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from facelandmarks.data.build import DownloadParams, build_annotations
from facelandmarks.io.caricature import read_caricature_txt
from facelandmarks.io.pts import AnnotationError
from facelandmarks.io.youtube_faces68 import person_of, read_youtube_faces68_csv


def test_youtube_faces68_first_row_known_values(raw_dir):
    """First data row of training_frames_keypoints.csv: ``Luis_Fonsi_21.jpg,45.0,98.0,47.0,106.0,...``."""
    csv = raw_dir / "youtube_faces68" / "training_frames_keypoints.csv"
    frames, bad = read_youtube_faces68_csv(csv)
    assert bad == [] and len(frames) == 3462
    first = frames.iloc[0]
    assert first.filename == "Luis_Fonsi_21.jpg" and first.person == "Luis_Fonsi"
    assert first.landmarks.shape == (68, 2) and first.landmarks.dtype == np.float32
    np.testing.assert_array_equal(first.landmarks[:3], [[45, 98], [47, 106], [49, 110]])  # 0-based, no offset
    row = csv.read_text().splitlines()[1].split(",")
    np.testing.assert_array_equal(first.landmarks[67], [float(row[135]), float(row[136])])


def test_youtube_faces68_both_folders(raw_dir):
    """4232 frames in all (3462 + 770) of 347 persons, every person in both folders, names reused."""
    root = raw_dir / "youtube_faces68"
    tr, _ = read_youtube_faces68_csv(root / "training_frames_keypoints.csv")
    te, _ = read_youtube_faces68_csv(root / "test_frames_keypoints.csv")
    assert len(tr) + len(te) == 4232
    assert set(tr.person) == set(te.person) and len(set(tr.person)) == 347
    assert set(te.filename) <= set(tr.filename)  # every test name is also a (different) training frame
    assert sorted(tr.filename) == sorted(p.name for p in (root / "training").iterdir())
    assert sorted(te.filename) == sorted(p.name for p in (root / "test").iterdir())


@pytest.mark.parametrize("name, person", [("Luis_Fonsi_21.jpg", "Luis_Fonsi"), ("Abdullah_Gul_0.jpg", "Abdullah_Gul"),
                                          ("Madonna.jpg", "Madonna")])
def test_person_of(name, person):
    assert person_of(name) == person


def test_youtube_faces68_bad_rows_are_skipped_with_a_count(tmp_path, raw_dir):
    lines = (raw_dir / "youtube_faces68" / "training_frames_keypoints.csv").read_text().splitlines()
    rows = lines[1:6]
    bad_short = ",".join(rows[1].split(",")[:100])  # 99 coordinates
    bad_word = rows[2].split(",")
    bad_word[7] = "abc"
    bad_long = rows[3] + ",1.0,2.0"  # 138 coordinates
    csv = tmp_path / "k.csv"
    csv.write_text("\n".join([lines[0], rows[0], bad_short, ",".join(bad_word), bad_long, rows[4]]) + "\n")
    frames, bad = read_youtube_faces68_csv(csv)
    assert list(frames.filename) == [rows[0].split(",")[0], rows[4].split(",")[0]]
    assert len(bad) == 3
    reasons = " | ".join(f"{w}: {r}" for w, r in bad)
    assert "139 fields, expected 137" in reasons
    assert f"{bad_word[0]}: 1 coordinates missing" in reasons and f"{bad_short.split(',')[0]}: 37 coordinates" in reasons


def test_youtube_faces68_unreadable_csv(tmp_path):
    p = tmp_path / "k.csv"
    p.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(AnnotationError, match="k.csv"):
        read_youtube_faces68_csv(p)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_youtube_faces68_csv(tmp_path / "nope.csv")


def test_caricature_known_values(raw_dir):
    """``caricature/1.txt`` starts ``117.25 152.833`` / ``120.167 176.167``: kept as is (0-based)."""
    pts = read_caricature_txt(raw_dir / "caricature" / "1.txt")
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    np.testing.assert_allclose(pts[:2], [[117.25, 152.833], [120.167, 176.167]], rtol=0, atol=1e-4)


def test_caricature_bad_files(tmp_path, raw_dir):
    lines = (raw_dir / "caricature" / "1.txt").read_text().splitlines()
    (tmp_path / "short.txt").write_text("\n".join(lines[:67]))
    with pytest.raises(AnnotationError, match="short.txt: 67 points, expected 68"):
        read_caricature_txt(tmp_path / "short.txt")
    (tmp_path / "word.txt").write_text("\n".join(lines[:10] + ["12.5 x"] + lines[11:]))
    with pytest.raises(AnnotationError, match="word.txt: expected 'x y'"):
        read_caricature_txt(tmp_path / "word.txt")


def test_download_stage_skips_broken_rows_and_files(tmp_path, raw_dir):
    """Both formats through the download stage: broken entries are reported with a count, the rest kept."""
    yt_src, yt = raw_dir / "youtube_faces68", tmp_path / "yt"
    lines = (yt_src / "training_frames_keypoints.csv").read_text().splitlines()
    keep = lines[1:6]
    (yt / "training").mkdir(parents=True)
    for r in keep:
        shutil.copy(yt_src / "training" / r.split(",")[0], yt / "training")
    broken = keep[1].split(",")
    broken[20] = ""
    missing_photo = "Nobody_Here_3.jpg," + ",".join(keep[2].split(",")[1:])
    (yt / "training_frames_keypoints.csv").write_text(
        "\n".join([lines[0], keep[0], ",".join(broken), *keep[2:], missing_photo]) + "\n")
    (yt / "test_frames_keypoints.csv").write_text(lines[0] + "\n")  # header only: reported, not silently empty
    (yt / "test").mkdir()
    car_src, car = raw_dir / "caricature", tmp_path / "car"
    car.mkdir()
    for n in ("1", "2", "3"):
        shutil.copy(car_src / f"{n}.jpg", car)
        shutil.copy(car_src / f"{n}.txt", car)
    (car / "2.txt").write_text("\n".join((car_src / "2.txt").read_text().splitlines()[:60]))
    cfg = DownloadParams(datasets=[
        {"name": "youtube_faces68", "format": "youtube_faces68_csv", "root": str(yt)},
        {"name": "caricature", "format": "caricature_txt", "root": str(car)},
    ])
    df, report = build_annotations(cfg, "ibug68", 0, progress=False)
    d = report["datasets"]
    assert d["youtube_faces68"]["faces_valid"] == 4
    assert d["youtube_faces68"]["invalid_by_reason"] == {"parse_error": 2, "missing_image": 1}
    assert d["caricature"]["faces_valid"] == 2 and d["caricature"]["invalid_by_reason"] == {"parse_error": 1}
    assert report["faces_invalid"] == 4
    files = " ".join(p["file"] for p in report["problems"])
    assert "test_frames_keypoints.csv: no data row" in " ".join(p["reason"] for p in report["problems"])
    assert broken[0] in files and "Nobody_Here_3.jpg" in files and "2.txt" in files
    assert set(df.loc[df.dataset == "caricature", "face_id"]) == {"caricature/1", "caricature/3"}
    assert (df.loc[df.dataset == "youtube_faces68", "image_path"].map(lambda p: "/training/" in p)).all()


def test_same_group_merges_and_rejects_unknown_ids(raw_dir):
    src = {"name": "caricature", "format": "caricature_txt", "root": str(raw_dir / "caricature")}
    from facelandmarks.data.sources import DatasetSource, load_source

    faces, _ = load_source(DatasetSource(**src, same_group=[["9", "48"], ["3", "24", "1"]]), 68)
    group = {f["face_id"]: f["group"] for f in faces}
    assert group["caricature/48"] == "caricature/9" and group["caricature/1"] == group["caricature/24"] == "caricature/3"
    assert len(set(group.values())) == 47
    with pytest.raises(ValueError, match=r"same_group names \['51'\], which are not groups.*ids look like '1'"):
        load_source(DatasetSource(**src, same_group=[["9", "51"]]), 68)
    with pytest.raises(ValueError, match="lists '9' twice"):
        load_source(DatasetSource(**src, same_group=[["9", "48"], ["9", "3"]]), 68)
