"""Accuracy benchmark (benchmarks/accuracy.py) end to end on a few real faces of both data sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.accuracy import AccuracyOptions, run_accuracy, summarise
from facelandmarks.crop.config import CropConfig
from facelandmarks.data.table import write_table
from facelandmarks.model.checkpoint import save_checkpoint
from facelandmarks.model.config import ModelConfig
from facelandmarks.model.network import build_model
from facelandmarks.params import load_params


def test_summarise_matches_the_metric_definitions():
    s = summarise(np.array([0.02, 0.05, 0.09, 0.2, np.nan]))
    assert s["faces"] == 4
    assert s["nme"] == pytest.approx(0.09)
    assert s["fr@0.08"] == pytest.approx(0.5) and s["fr@0.10"] == pytest.approx(0.25)
    # AUC at t = mean of max(0, 1 - e / t)
    assert s["auc@0.10"] == pytest.approx(np.mean([0.8, 0.5, 0.1, 0.0]))


@pytest.mark.slow
def test_same_faces_same_boxes_for_both_methods(annotations, tmp_path):
    df, _ = annotations
    table = tmp_path / "annotations.parquet"
    write_table(df, table)
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"  # an untrained network: the protocol is tested, not our accuracy
    save_checkpoint(ckpt, build_model(ModelConfig(crop=CropConfig().model_dump())))
    opts = AccuracyOptions(annotations=table, crops_table=None, calibration_faces=12, max_faces=3)
    r = run_accuracy(ckpt, load_params("params.yaml"), opts, progress=False)

    assert r["faces"] == {ds: 3 for ds in sorted(df["dataset"].unique())}  # every data set's test faces
    cal = r["calibration"]
    assert cal["faces"] == 12 and 1 <= cal["hog_found"] <= 12
    # HOG boxes are tighter than MTCNN's and sit lower (no forehead)
    assert 0.5 < cal["detector_to_hog"]["scale"] < 1.1
    for protocol in ("detector", "landmarks"):
        for ds in ("300w", "infanface"):
            e = r["protocols"][protocol][ds]
            assert e["ours"]["faces"] == e["dlib"]["faces"] == 3
            assert math.isfinite(e["ours"]["nme"]) and math.isfinite(e["dlib"]["nme"])
    # with a box in its own convention, dlib lands on 300-W faces (a wrong box or point convention would not)
    assert r["protocols"]["detector"]["300w"]["dlib"]["nme_median"] < 0.1
    assert r["protocols"]["landmarks"]["300w"]["dlib"]["nme_median"] < 0.1
    native = r["dlib_native"]["300w"]
    assert native["ours"]["faces"] == native["dlib"]["faces"] == native["hog_found"] <= 3
