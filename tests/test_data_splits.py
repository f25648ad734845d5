"""Splits by source group on the real annotation table: no group straddles two splits, and the check catches one."""

from __future__ import annotations

import numpy as np
import pytest

from facelandmarks.data.splits import SplitLeakError, assign_splits, check_group_splits
from facelandmarks.io.infanface import infanface_groups, read_infanface_labels

DATASETS = ["300w", "infanface", "youtube_faces68", "caricature"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_no_group_straddles_splits(annotations, dataset):
    df, _ = annotations
    sub = df[df.dataset == dataset]
    assert len(sub) > 0
    assert (sub.groupby("group")["split"].nunique() == 1).all()
    assert set(sub["split"]) == {"train", "val", "test"}
    check_group_splits(sub)  # does not raise


def test_check_names_the_leaking_group(annotations):
    df, _ = annotations
    leaky = df.copy()
    a, b = "infanface/ads/45429.Still124", "infanface/ads/45431.Still125"
    split_a = leaky.loc[leaky.face_id == a, "split"].iloc[0]
    other = "train" if split_a != "train" else "test"
    leaky.loc[leaky.face_id == b, "split"] = other
    with pytest.raises(SplitLeakError, match=r"1 split group\(s\) straddle.*infanface/ads/\S+ \(infanface\)"):
        check_group_splits(leaky)


def test_per_photo_splitting_would_leak(annotations):
    """The old per-photo assignment puts frames of one person in several splits: the check refuses it."""
    df, _ = annotations
    per_photo = df.assign(group=df["photo_id"])
    per_photo["split"] = assign_splits(per_photo, 0.15, 0.15, seed=42)
    with pytest.raises(SplitLeakError):
        check_group_splits(per_photo.assign(group=df["group"]))


def test_assign_splits_is_deterministic_and_keeps_groups(annotations):
    df, _ = annotations
    shuffled = df.sample(frac=1.0, random_state=3)
    again = assign_splits(shuffled, 0.15, 0.15, seed=42)
    assert (again.loc[df.index] == df["split"]).all()  # listing order does not matter
    other = assign_splits(df, 0.15, 0.15, seed=7)
    assert (other != df["split"]).any()
    check_group_splits(df.assign(split=other))
    with pytest.raises(ValueError, match="no `group` column"):
        assign_splits(df.drop(columns="group"), 0.15, 0.15, seed=42)


def test_infanface_groups_do_not_depend_on_row_order(raw_dir):
    labels = read_infanface_labels(raw_dir / "infanface" / "labels.csv")
    groups = infanface_groups(list(labels.image_set), list(labels.filename), list(labels.image_path))
    order = np.random.default_rng(0).permutation(len(labels))
    perm = labels.iloc[order]
    again = infanface_groups(list(perm.image_set), list(perm.filename), list(perm.image_path))
    assert again == [groups[i] for i in order]
    by_name = dict(zip(labels.image_set + "/" + labels.filename, groups))
    # one ad: stills 45429 ... 45467 (frame gaps 2-18); the next ad starts > 500 frames later
    assert len({by_name[f"ads/{n}"] for n in ("45429.Still124.jpg", "45431.Still125.jpg", "45467.Still135.jpg")}) == 1
    assert by_name["ads/45429.Still124.jpg"] != by_name["ads/48527.Still147.jpg"]
    assert by_name["youtube2/015.jpg"] == by_name["youtube2/016.jpg"] == by_name["youtube2/017.jpg"] == "youtube2/015"
    assert by_name["youtube2/014.jpg"] != by_name["youtube2/015.jpg"]
    assert len(set(groups)) == 145


def test_unreadable_photo_falls_back_to_the_frame_rule(tmp_path):
    groups = infanface_groups(["ads", "ads", "youtube2"], ["100.Still001.jpg", "150.Still002.jpg", "001.jpg"],
                              [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), str(tmp_path / "c.jpg")])
    assert groups == ["ads/100.Still001", "ads/100.Still001", "youtube2/001"]
