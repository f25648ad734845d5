"""The `download` stage on the real data, on broken inputs, and on a URL source."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from facelandmarks.data.build import DownloadParams, build_annotations
from facelandmarks.data.table import read_table, stack_column, write_table


def test_real_table_has_every_face_and_clean_splits(annotations):
    df, report = annotations
    counts = df["dataset"].value_counts().to_dict()
    assert counts == {"300w": 1207, "infanface": 210, "youtube_faces68": 4232, "caricature": 50}
    assert report["faces_invalid"] == 0
    assert set(df.loc[df.dataset == "300w", "subset"]) == {"afw", "helen"}
    assert (df.groupby("photo_id")["split"].nunique() == 1).all()  # no photo in two splits
    assert (df.groupby("group")["split"].nunique() == 1).all()  # no source group in two splits
    afw = df[df.subset == "afw"]
    assert afw["photo_id"].nunique() < len(afw)  # multi-face AFW photos grouped
    pts = stack_column(df)
    assert pts.shape == (5699, 68, 2) and pts.dtype == np.float32
    w = df["image_width"].to_numpy()[:, None]
    curated = (df["dataset"] != "youtube_faces68").to_numpy()
    assert (pts[curated, :, 0] >= -5).all() and (pts[curated, :, 0] <= w[curated] + 5).all()
    # youtube_faces68 frames are tight around the face: 3 frames have a jaw point up to 23 px outside,
    # within download.validation.max_outside (10 % of the frame side)
    yt = pts[~curated, :, 0]
    assert (yt < -5).any(axis=1).sum() == 3 and (yt >= -0.1 * w[~curated]).all()
    inf = df[df.dataset == "infanface"]
    assert inf["turned"].notna().all() and df.loc[df.dataset != "infanface", "turned"].isna().all()


@pytest.mark.parametrize("dataset", ["300w", "infanface", "youtube_faces68", "caricature"])
def test_split_fractions_apply_to_groups(annotations, dataset):
    """``download.splits`` (0.15 / 0.15) is applied to groups: exact group counts, and every split non-empty."""
    df, report = annotations
    sub = df[df.dataset == dataset]
    groups = sub.groupby("group")["split"].first().value_counts()
    n = sub["group"].nunique()
    assert groups["val"] == round(0.15 * n) and groups["test"] == round(0.15 * n)
    assert groups.sum() == n
    rep = report["datasets"][dataset]
    assert rep["groups"] == n and rep["groups_per_split"] == {s: int(groups[s]) for s in ("train", "val", "test")}
    assert rep["splits"] == {s: int((sub["split"] == s).sum()) for s in ("train", "val", "test")}


def test_groups_follow_the_source(annotations):
    df, _ = annotations
    by_id = df.set_index("face_id")["group"]
    w = df[df.dataset == "300w"]
    assert (w["group"] == w["photo_id"]).all()  # 300-W: the photo (AFW photo id; HELEN file)
    c = df[df.dataset == "caricature"].set_index("face_id")["group"]
    assert len(c) == 50 and c.nunique() == 40  # caricature: the file, with params' same_group merged
    obama = [f"caricature/{n}" for n in (13, 14, 16, 25, 29, 34, 39)]
    assert set(c[obama]) == {"caricature/13"} and c["caricature/48"] == "caricature/9"
    assert c["caricature/1"] == "caricature/1"
    y = df[df.dataset == "youtube_faces68"]
    assert y["group"].nunique() == 347 and y["photo_id"].nunique() == 4232  # person; frames of both folders
    # the same file name in training/ and test/ is two frames of one person: two faces, one group
    a, b = "youtube_faces68/training/James_Wolfensohn_00", "youtube_faces68/test/James_Wolfensohn_00"
    assert by_id[a] == by_id[b] == "youtube_faces68/James_Wolfensohn"
    lm = df.set_index("face_id")["landmarks"]
    assert not np.array_equal(lm[a], lm[b])  # different frames behind the same name
    assert y.groupby("group")["photo_id"].apply(lambda s: s.str.contains("/training/").any()).all()
    # InfAnFace: the leaks named in issue 10 are one group each now
    assert by_id["infanface/ads/45429.Still124"] == by_id["infanface/ads/45431.Still125"]
    assert by_id["infanface/youtube2/016"] == by_id["infanface/youtube2/017"]
    assert by_id["infanface/ads/45429.Still124"] != by_id["infanface/ads/794.Still005"]
    inf = df[df.dataset == "infanface"]
    assert inf.groupby("subset")["group"].nunique().to_dict() == {"ads": 41, "google2": 51, "youtube2": 53}


def test_splits_are_deterministic_and_seeded(annotations):
    from facelandmarks.data.splits import assign_splits

    df, _ = annotations
    again = assign_splits(df, 0.15, 0.15, seed=42)
    assert (again == df["split"]).all()
    other = assign_splits(df, 0.15, 0.15, seed=7)
    assert (other != df["split"]).any()


def test_table_roundtrip(tmp_path, annotations):
    df, _ = annotations
    write_table(df, tmp_path / "t.parquet")
    back = read_table(tmp_path / "t.parquet")
    np.testing.assert_array_equal(stack_column(back), stack_column(df))
    np.testing.assert_array_equal(stack_column(back, "visible"), stack_column(df, "visible"))
    assert back["turned"].equals(df["turned"]) and list(back.columns) == list(df.columns)


def _copy_faces(src_dir, dst_dir, names):
    dst_dir.mkdir(parents=True)
    for n in names:
        for s in (".jpg", ".pts"):
            shutil.copy(src_dir / f"{n}{s}", dst_dir / f"{n}{s}")


def test_bad_faces_are_reported_and_skipped(tmp_path, raw_dir):
    afw = raw_dir / "300w" / "afw"
    names = sorted(p.stem for p in afw.glob("*.pts"))[:6]
    root = tmp_path / "300w"
    _copy_faces(afw, root / "afw", names)
    lines = (root / "afw" / f"{names[0]}.pts").read_text().splitlines()
    (root / "afw" / f"{names[0]}.pts").write_text("\n".join(["version: 1", "n_points: 60"] + lines[2:63] + ["}"]))
    lines1 = (root / "afw" / f"{names[1]}.pts").read_text().splitlines()
    lines1[10] = "nan " + lines1[10].split()[1]
    (root / "afw" / f"{names[1]}.pts").write_text("\n".join(lines1))
    pts_far = "\n".join(["version: 1", "n_points: 68", "{"] + ["50000 50000"] * 68 + ["}"])
    (root / "afw" / f"{names[2]}.pts").write_text(pts_far)
    (root / "afw" / f"{names[3]}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    cfg = DownloadParams(datasets=[{"name": "300w", "format": "pts", "root": str(root), "subsets": ["afw"]}])
    df, report = build_annotations(cfg, "ibug68", 0, progress=False)
    kinds = {p["kind"] for p in report["problems"]}
    assert kinds == {"wrong_point_count", "nan", "outside", "unreadable_image"}
    assert len(df) == 2 and report["datasets"]["300w"]["faces_invalid"] == 4
    files = " ".join(p["file"] for p in report["problems"])
    for n in names[:4]:
        assert n in files


def test_missing_root_explains_how_to_get_data(tmp_path):
    cfg = DownloadParams(datasets=[{"name": "300w", "format": "pts", "root": str(tmp_path / "nope")}])
    with pytest.raises(FileNotFoundError, match="dvc pull.*dvc remote add"):
        build_annotations(cfg, "ibug68", 0, progress=False)


def test_url_source_through_local_http_server(tmp_path, fixtures_dir):
    """A `dlib_xml` data set published as a zip on a real HTTP server on 127.0.0.1."""
    import io
    import threading
    import zipfile
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted((fixtures_dir / "dlib_examples_faces").iterdir()):
            zf.write(p, arcname=f"dlib_faces/{p.name}")
    data = buf.getvalue()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "faces.zip").write_bytes(data)
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        cfg = DownloadParams(
            cache_dir=str(tmp_path / "cache"),
            datasets=[{
                "name": "dlib", "format": "dlib_xml", "root": str(tmp_path / "ext"),
                "xml": "dlib_faces/training_with_face_landmarks.xml",
                "url": f"http://127.0.0.1:{httpd.server_address[1]}/faces.zip",
                "sha256": hashlib.sha256(data).hexdigest(),
            }],
            splits={"val": 0.2, "test": 0.2},
        )
        df, report = build_annotations(cfg, "ibug68", 0, progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert report["faces_invalid"] == 0 and len(df) > 0
    assert df["image_path"].map(lambda p: (tmp_path / "ext" / "dlib_faces").as_posix() in p).all()
    assert (df["group"] == df["photo_id"]).all()
    assert (df.groupby("group")["split"].nunique() == 1).all()
