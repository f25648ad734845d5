"""The augment stage on real crops: train faces only, variant 0 is the crop, deterministic for a seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facelandmarks.augment.config import AugmentParams
from facelandmarks.augment.stage import AUGMENTED_COLUMNS, augment_table
from facelandmarks.data.table import read_table, write_table
from facelandmarks.io.images import read_image
from facelandmarks.params import load_params
from facelandmarks.schemes import IBUG68

STAGE = "augment"


@pytest.fixture(scope="module")
def augmented(small_crops, tmp_path_factory):
    crops, _, _ = small_crops
    params = AugmentParams(variants=3)
    a, ra = augment_table(crops, params, 42, tmp_path_factory.mktemp("aug_a"), progress=False)
    b, rb = augment_table(crops, params, 42, tmp_path_factory.mktemp("aug_b"), progress=False)
    c, _ = augment_table(crops, params, 43, tmp_path_factory.mktemp("aug_c"), progress=False)
    return crops, a, b, c, ra


def test_only_training_faces_get_variants(augmented):
    crops, a, *_ = augmented
    train = crops[crops["split"] == "train"]
    assert (crops["split"] != "train").any()  # the subset has val/test faces, and they are left out
    assert set(a["face_id"]) == set(train["face_id"])
    assert (a["split"] == "train").all()
    assert sorted(a["variant"].unique()) == [0, 1, 2, 3]
    assert len(a) == 4 * len(train)
    assert list(a.columns) == AUGMENTED_COLUMNS


def test_variant_0_is_the_crop_unchanged(augmented):
    crops, a, *_ = augmented
    by_id = crops.set_index("face_id")
    for _, r in a[a["variant"] == 0].iterrows():
        src = by_id.loc[r["face_id"]]
        assert np.array_equal(read_image(r["image_path"]), read_image(src["crop_path"]))
        np.testing.assert_array_equal(r["landmarks"], src["crop_landmarks"])
        assert r["landmarks"].dtype == np.float32 and r["visible"].dtype == bool


def test_deterministic_for_a_seed_and_different_across_seeds(augmented):
    _, a, b, c, _ = augmented
    aug = a["variant"] > 0
    for (_, ra), (_, rb) in zip(a[aug].iterrows(), b[aug].iterrows()):
        np.testing.assert_array_equal(ra["landmarks"], rb["landmarks"])
        assert np.array_equal(read_image(ra["image_path"]), read_image(rb["image_path"]))
    differ = sum(not np.allclose(ra["landmarks"], rc["landmarks"]) for (_, ra), (_, rc) in zip(a[aug].iterrows(), c[aug].iterrows()))
    assert differ >= 0.8 * aug.sum()


def test_flipped_variants_are_reindexed_mirrors(small_crops, tmp_path):
    """With only a flip, a flipped variant's landmarks are exactly the scheme's mirror of the crop's."""
    crops, _, _ = small_crops
    off = {"p": 0.0}
    params = AugmentParams(variants=4, affine=off, flip={"p": 0.5}, color=off, blur=off, noise=off, jpeg=off, occlusion=off)
    t, _ = augment_table(crops, params, 42, tmp_path, progress=False)
    by_id = crops.set_index("face_id")
    flipped = t[t["flipped"]]
    assert 0 < len(flipped) < (t["variant"] > 0).sum()
    for _, r in flipped.iterrows():
        src = by_id.loc[r["face_id"]]
        S = read_image(r["image_path"]).shape[1]
        np.testing.assert_allclose(r["landmarks"], IBUG68.flip(src["crop_landmarks"], S), atol=1e-4)
        assert np.array_equal(read_image(r["image_path"]), read_image(src["crop_path"])[:, ::-1])


@pytest.mark.slow
def test_stage_main_writes_table_images_preview_and_report(small_crops, tmp_path, stage_params_file, stage_logged_to_mlflow):
    crops, _, _ = small_crops
    write_table(crops, tmp_path / "crops.parquet")
    params = load_params("params.yaml")
    params["augment"].update(
        variants=2,
        crops=str(tmp_path / "crops.parquet"),
        out_dir=str(tmp_path / "augmented"),
        table=str(tmp_path / "augmented.parquet"),
        report=str(tmp_path / "augment.json"),
        preview={"faces": 3, "out": str(tmp_path / "preview.png")},
    )
    stage_params_file(params)

    from facelandmarks.augment.stage import main

    main(str(tmp_path / "params.yaml"))
    t = read_table(tmp_path / "augmented.parquet")
    crop_side = int(params["crop"]["size"])  # the crop stage's crops, unchanged in size by augmentation
    assert len(t) == 3 * (crops["split"] == "train").sum()
    for _, r in t.iterrows():
        assert r["image_path"].startswith(str(tmp_path / "augmented"))
        assert read_image(r["image_path"]).shape == (crop_side, crop_side, 3)
        assert r["landmarks"].shape == (68, 2) and r["visible"].shape == (68,)
    preview = read_image(tmp_path / "preview.png")
    assert preview.shape[0] > 200 and preview.shape[1] > 200
    report = json.loads((tmp_path / "augment.json").read_text())
    assert report["rows"] == len(t) and report["faces_skipped"] == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    stage_logged_to_mlflow(tmp_path, STAGE)
