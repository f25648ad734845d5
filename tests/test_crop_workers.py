"""The crop stage in a process pool or on a Dask cluster: the same chunks of photos, the same per-photo code,
the same bytes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from facelandmarks.crop.config import CropCluster
from facelandmarks.crop.stage import CropParams, photo_chunks


def test_cluster_params_are_strict():
    assert CropParams().cluster == CropCluster(backend="local", address=None, workers=2)
    assert CropCluster.model_validate({"backend": "dask", "address": "tcp://10.0.0.5:8786"}).address
    with pytest.raises(ValueError, match="use backend: dask"):
        CropCluster(backend="local", address="tcp://10.0.0.5:8786")
    assert CropCluster(backend="processes").workers == 2
    with pytest.raises(ValueError):
        CropCluster.model_validate({"backend": "ray"})
    with pytest.raises(ValueError):
        CropCluster.model_validate({"backend": "dask", "nodes": 3})  # unknown key
    with pytest.raises(ValueError):
        CropCluster(workers=0)


def test_photo_chunks_keep_photos_whole_and_rows_in_order(annotations):
    df = annotations[0].head(300)
    chunks = photo_chunks(df, 7)
    assert pd.concat(chunks).index.tolist() == sorted(df.index.tolist())  # every row once, order kept
    photos = [set(c["photo_id"]) for c in chunks]
    assert all(len(p) == 7 for p in photos[:-1]) and 1 <= len(photos[-1]) <= 7
    assert sum(len(p) for p in photos) == df["photo_id"].nunique()  # no photo split across chunks
    assert [len(c) for c in photo_chunks(df, 7)] == [len(c) for c in chunks]  # the table alone decides
    assert photo_chunks(df.head(0), 7) == []
    with pytest.raises(ValueError):
        photo_chunks(df, 0)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.needs_data
def test_two_workers_give_the_single_process_bytes(crop_subset, tmp_path, monkeypatch):
    """The crop stage (``main``) on a Dask LocalCluster of 2 worker processes and in a pool of 2 spawned
    processes writes a byte-identical crops.parquet and byte-identical PNGs to the single-process stage,
    with the same report counts and problems; an unreadable photo is reported, not fatal, in all three."""
    from facelandmarks.crop.stage import main
    from facelandmarks.data.table import write_table

    # the real subset (~20 faces, 15 photos) plus one photo whose file is not an image
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG")
    extra = crop_subset.iloc[[0]].copy()
    extra["face_id"], extra["photo_id"], extra["image_path"] = "300w/broken/0", "300w/broken", str(bad)
    faces = pd.concat([crop_subset.iloc[:5], extra, crop_subset.iloc[5:]]).reset_index(drop=True)
    write_table(faces, tmp_path / "annotations.parquet")

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FACELANDMARKS_PARENT_RUN_ID", raising=False)
    params = yaml.safe_load(Path("params.yaml").read_text())
    crop = params["crop"]
    # batch 2 -> chunks of 8 photos: this subset is 2 or more chunks, so both workers get work
    crop["detector"].update(device="cpu", batch_size=2)
    crop.update(num_threads=1, annotations=str(tmp_path / "annotations.parquet"), table=str(tmp_path / "crops.parquet"),
                out_dir=str(tmp_path / "crops"), report=str(tmp_path / "crop.json"))
    run_params = {"seed": params["seed"], "scheme": params["scheme"], "crop": crop,
                  "tracking": {"experiment": "crop-dask-test", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                               "artifact_location": str(tmp_path / "mlartifacts")}}

    def run(cluster: dict) -> dict:
        crop["cluster"] = cluster
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(run_params))
        return main(str(tmp_path / "params.yaml"))

    local = run({"backend": "local"})
    ref = tmp_path / "ref"
    shutil.copytree(tmp_path / "crops", ref / "crops")
    shutil.copy(tmp_path / "crops.parquet", ref / "crops.parquet")
    shutil.rmtree(tmp_path / "crops")
    (tmp_path / "crops.parquet").unlink()

    chunks = -(-faces["photo_id"].nunique() // 8)
    assert chunks >= 2
    assert local["cluster"] == {"backend": "local", "workers": 1, "chunks": chunks}
    pngs = sorted(p.relative_to(ref / "crops") for p in (ref / "crops").rglob("*.png"))
    assert len(pngs) == len(crop_subset) == local["cropped"]
    for backend in ("dask", "processes"):
        for old in (tmp_path / "crops", tmp_path / "crops.parquet"):
            shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
        other = run({"backend": backend, "address": None, "workers": 2})
        assert other["cluster"] == {"backend": backend, "workers": 2, "chunks": chunks}

        # the table, byte for byte (same rows, same order, same crop_path), and every PNG byte for byte
        assert _sha(tmp_path / "crops.parquet") == _sha(ref / "crops.parquet"), backend
        assert sorted(p.relative_to(tmp_path / "crops") for p in (tmp_path / "crops").rglob("*.png")) == pngs
        for rel in pngs:
            assert _sha(tmp_path / "crops" / rel) == _sha(ref / "crops" / rel), (backend, rel)

        # the same counts and problems; only timings differ (and the decoder's error text, which holds an object address)
        timing = ("wall_s", "detect_s", "faces_per_s", "cluster", "problems")
        assert {k: v for k, v in other.items() if k not in timing} == {k: v for k, v in local.items() if k not in timing}
        for report in (local, other):
            [problem] = report["problems"]
            assert problem["photo_id"] == "300w/broken" and problem["reason"] == "unreadable" and str(bad) in problem["detail"]
            assert report["datasets"]["300w"]["photos_unreadable"] == 1
        assert json.loads((tmp_path / "crop.json").read_text())["cluster"]["backend"] == backend
        assert np.isfinite(other["wall_s"])


@pytest.mark.slow
def test_workers_that_cannot_see_the_photos_are_refused(crop_subset, tmp_path):
    """Workers of a real cluster must run in the project root on shared storage: checked before any work."""
    from facelandmarks.crop.stage import crop_faces, dask_client

    faces = crop_subset.head(2).copy()
    faces["image_path"] = "data/raw/no/such/photo.jpg"
    with dask_client(CropCluster(backend="dask", workers=1)) as client, \
            pytest.raises(RuntimeError, match="cannot see"):
        crop_faces(faces, CropParams(), tmp_path, progress=False, client=client)
    assert not any(tmp_path.iterdir())
