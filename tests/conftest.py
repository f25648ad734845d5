"""Shared pytest fixtures: quiet offline environment, the real data, a real annotation table.

Tests that read the real data (``data/raw``, restored by ``dvc pull``, or ``../shared/fixtures``) are marked
``needs_data``: module-wide with ``pytestmark = pytest.mark.needs_data``, per test, or automatically when they
use one of the data fixtures below (:data:`DATA_FIXTURES`). ``make unit`` (``pytest -m "not needs_data"``)
runs the others in seconds on a fresh clone. Any run that selects a ``needs_data`` test while the data is
missing stops before the first test with an error naming what is missing: ``make test`` and CI run
everything, and a missing ``data/raw`` is an error there, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facelandmarks.quiet import QUIET_ENV

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"

# One list of the quiet offline environment (src/facelandmarks/quiet.py; the Makefile reads it too), plus:
# torch's OpenMP threads sleep instead of spinning while waiting: several times faster on busy cores.
for _k, _v in {**QUIET_ENV, "OMP_WAIT_POLICY": "PASSIVE"}.items():
    os.environ.setdefault(_k, _v)

# Stages resolve relative paths (params, data/raw) against the project root.
os.chdir(ROOT)

#: Fixtures that read the real data: a test using one is marked ``needs_data`` automatically.
DATA_FIXTURES = frozenset({
    "raw_dir", "fixtures_dir", "annotations", "tiny_data_cache", "tiny_project", "crop_subset", "small_crops",
    "landmark_crops", "infant_crops", "tiny_checkpoint",
})


def missing_data() -> list[str]:
    """What of the real data is missing: ``[]`` when ``data/raw`` holds every data set root that params.yaml's
    ``download.datasets`` names under it (300-W, InfAnFace, ...) and InfAnFace's ``labels.csv``."""
    import yaml

    datasets = (yaml.safe_load((ROOT / "params.yaml").read_text()).get("download") or {}).get("datasets") or []
    roots = [ROOT / d["root"] for d in datasets if str(d.get("root", "")).startswith("data/raw/")]
    need = [RAW / "300w", RAW / "infanface", *roots]
    missing = [str(p.relative_to(ROOT)) for p in dict.fromkeys(need) if not p.exists()]
    if (RAW / "infanface").is_dir() and not (RAW / "infanface" / "labels.csv").is_file():
        missing.append("data/raw/infanface/labels.csv")
    return missing


def _require_data() -> None:
    """Fail (never skip) the calling fixture or test when the data is missing."""
    missing = missing_data()
    if missing:
        pytest.fail(f"the real data is missing ({', '.join(missing)}): run `dvc pull` (or `make data`); "
                    "`make unit` runs only the tests that need no data", pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark tests that use a data fixture ``needs_data`` (before ``-m`` deselects)."""
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_data)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """After ``-m`` selection: a run that selects ``needs_data`` tests without the data stops here, as an error."""
    wanted = [i for i in session.items if i.get_closest_marker("needs_data") is not None]
    missing = missing_data()
    if wanted and missing:
        raise pytest.UsageError(
            f"{len(wanted)} selected tests need the real data, which is missing ({', '.join(missing)}): run "
            "`dvc pull` (or `make data`) first, or run only the tests that need no data: `make unit` "
            "(pytest -m \"not needs_data\").")


@pytest.fixture(scope="session")
def raw_dir() -> Path:
    """``data/raw`` restored by ``dvc pull``."""
    _require_data()
    return RAW


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``../shared/fixtures`` (dlib and menpo format fixtures)."""
    if not FIXTURES.is_dir():
        pytest.fail(f"{FIXTURES} is missing: CI runs with ../shared beside the clone", pytrace=False)
    return FIXTURES


@pytest.fixture(scope="session")
def annotations(tmp_path_factory):
    """The real annotation table of the default params (all 300-W and InfAnFace faces).

    Built once per session by the download stage's own code into a temporary folder.
    Returns ``(DataFrame, report)``.
    """
    from facelandmarks.data.build import DownloadParams, build_annotations
    from facelandmarks.params import load_params, section

    _require_data()
    params = load_params(ROOT / "params.yaml")
    cfg = section(params, "download", DownloadParams)
    return build_annotations(cfg, params["scheme"], int(params["seed"]), progress=False)


# --- tiny project (tests/tiny_project.py): a small, self-contained copy for end-to-end runs ---------


@pytest.fixture(scope="session")
def tiny_data_cache(tmp_path_factory) -> Path:
    """DVC data objects shared by the tiny copies of one session (the remote is read once)."""
    return tmp_path_factory.mktemp("tiny-dvc-data")


@pytest.fixture
def tiny_project(tmp_path, tiny_data_cache):
    """A fresh tiny copy of the project in ``tmp_path / "project"`` with ``data/raw`` pulled
    (see :func:`tiny_project.make_tiny_project`)."""
    from tiny_project import make_tiny_project

    _require_data()
    return make_tiny_project(tmp_path / "project", data_cache=tiny_data_cache)


# --- crop / augment (crop helper): a small real subset, cropped once per session -------------------


@pytest.fixture(scope="session")
def crop_subset(annotations):
    """About 20 real faces for crop and augment tests, a fixed choice from the annotation table:
    two AFW photos with several faces (byte-identical files per face), one HELEN photo with several
    face files (different crops of one photo), four other HELEN faces, and two faces of each
    InfAnFace subset; both data sets, every split present."""
    import pandas as pd

    df = annotations[0]
    per_photo = df.groupby("photo_id")["face_id"].transform("size")
    afw = df[(df["subset"] == "afw") & (per_photo >= 2)]
    afw = afw[afw["photo_id"].isin(sorted(afw["photo_id"].unique())[:2])]
    helen_multi = df[(df["subset"] == "helen") & (per_photo >= 2)]
    helen_multi = helen_multi[helen_multi["photo_id"] == sorted(helen_multi["photo_id"].unique())[0]]
    helen = df[(df["subset"] == "helen") & (per_photo == 1)].sort_values("face_id")
    helen = helen.groupby("split").head(2).head(4)
    infant = df[df["dataset"] == "infanface"].sort_values("face_id").groupby("subset").head(2)
    sub = pd.concat([afw, helen_multi, helen, infant]).drop_duplicates("face_id").reset_index(drop=True)
    return sub


@pytest.fixture(scope="session")
def small_crops(crop_subset, tmp_path_factory):
    """:func:`facelandmarks.crop.stage.crop_faces` run with the project's ``crop`` params on
    :func:`crop_subset`. Returns ``(crops DataFrame, report, crops folder)``."""
    import torch

    from facelandmarks.crop.stage import CropParams, crop_faces
    from facelandmarks.params import load_params, section

    torch.set_num_threads(1)
    cfg = section(load_params(ROOT / "params.yaml"), "crop", CropParams)
    cfg = cfg.model_copy(update={"detector": cfg.detector.model_copy(update={"device": "cpu"})})
    out = tmp_path_factory.mktemp("crops")
    crops, report = crop_faces(crop_subset, cfg, out, progress=False)
    return crops, report, out


# --- model / train (training helper): real faces cropped around their landmarks, in memory ----------


def _landmark_box_crops(faces, size: int = 64):
    """Cut square crops (side 1.4 x the longer side of the landmark box; facelandmarks.crop.geometry) of
    ``faces``: iterable of ``(face_id, photo path, (68, 2) landmarks)``. Returns a train.dataset.CropSet."""
    import numpy as np

    from facelandmarks.crop.geometry import (
        crop_square,
        invert_affine,
        map_points,
        square_box,
    )
    from facelandmarks.data.table import landmarks_bbox
    from facelandmarks.io.images import read_image
    from facelandmarks.train.dataset import CropSet

    images, points, ids = [], [], []
    for face_id, photo_path, pts in faces:
        crop, crop_to_photo = crop_square(read_image(photo_path), square_box(landmarks_bbox(pts), 1.4), size)
        images.append(crop)
        points.append(map_points(pts, invert_affine(crop_to_photo)).astype(np.float32))
        ids.append(face_id)
    lms = np.stack(points)
    return CropSet(np.stack(images), lms, np.ones(lms.shape[:2], bool), np.asarray(ids))


@pytest.fixture(scope="session")
def landmark_crops():
    """24 real HELEN faces (data/raw/300w/helen_train, sorted by name) as 64 px square crops around their
    landmark box. Returns :class:`facelandmarks.train.dataset.CropSet` (images ``(24, 64, 64, 3) uint8``,
    landmarks ``(24, 68, 2) float32`` crop pixels, all visible)."""
    from facelandmarks.io.pts import read_pts

    _require_data()
    paths = sorted((RAW / "300w" / "helen_train").glob("*.pts"))[:24]
    return _landmark_box_crops((f"300w/helen/{p.stem}", p.with_suffix(".jpg"), read_pts(p)) for p in paths)


@pytest.fixture(scope="session")
def infant_crops():
    """12 real InfAnFace faces (the first rows of labels.csv) as 64 px crops, like :func:`landmark_crops`."""
    from facelandmarks.io.infanface import read_infanface_labels

    _require_data()
    rows = read_infanface_labels(RAW / "infanface" / "labels.csv").head(12)
    return _landmark_box_crops(
        (f"infanface/{r.image_set}/{r.filename}", r.image_path, r.landmarks) for r in rows.itertuples()
    )


# --- evaluate / registry / inference / serving (serving helper): a real, briefly trained model --------


@pytest.fixture(scope="session")
def tiny_checkpoint(small_crops, tmp_path_factory) -> Path:
    """A real landmark network (mobilenetv3_small_050 + heatmap head) trained for a few epochs on the
    :func:`small_crops` faces (cut by the crop stage's own code with the project's ``crop`` params, which
    the checkpoint stores, so inference cuts faces alike). Saved by the training code
    (:func:`facelandmarks.train.loop.fit`); returns the ``model.pt`` path. Not accurate, but real."""
    import torch

    from facelandmarks.model.config import ModelConfig
    from facelandmarks.model.network import build_model
    from facelandmarks.params import load_params
    from facelandmarks.schemes import get_scheme
    from facelandmarks.train.dataset import FaceDataset, load_faces
    from facelandmarks.train.loop import FitOptions, fit

    torch.set_num_threads(1)  # 2 threads on a busy 2-core machine are many times slower (OpenMP spinning)
    torch.manual_seed(0)
    crops, _, _ = small_crops
    crop = dict(load_params(ROOT / "params.yaml")["crop"])
    cfg = ModelConfig(backbone="mobilenetv3_small_050", pretrained=False, head="heatmap", head_channels=16,
                      num_points=68, scheme="ibug68", input_size=int(crop["size"]), crop=crop)
    faces = load_faces(crops, ROOT, "crop_path", "crop_landmarks", size=cfg.input_size)
    model = build_model(cfg)
    out = tmp_path_factory.mktemp("tiny-model")
    fit(model, FaceDataset(faces, get_scheme("ibug68")), faces, [{"params": list(model.parameters()), "lr": 3e-3}],
        FitOptions(epochs=4, batch_size=8, warmup_epochs=0.5, device="cpu", progress=False, resume=False, patience=0),
        out / "model.pt", out / "last.pt", meta={"stage": "tests"})
    return out / "model.pt"


@pytest.fixture
def stage_logged_to_mlflow():
    """A check: the MLflow store ``<root>/mlflow.db`` holds exactly one FINISHED child run of ``stage`` with metrics."""

    def check(root: Path, stage: str) -> None:
        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
        runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
        child = [r for r in runs if r.data.tags.get("facelandmarks.stage") == stage]
        assert len(child) == 1 and child[0].info.status == "FINISHED", [r.info.status for r in child]
        assert child[0].data.metrics

    return check


def wait_until_healthy(url: str, proc, log: Path, timeout_s: float, what: str) -> None:
    """Poll ``GET url`` until it answers 200 while ``proc`` (a started server) runs; fail with the log's tail
    when the server exits or ``timeout_s`` passes."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} not healthy at {url} after {timeout_s} s:\n{log.read_text()[-4000:]}")


@pytest.fixture
def stage_params_file(tmp_path, monkeypatch):
    """Write a stage's params to ``tmp_path/params.yaml`` with its own MLflow store (``tmp_path/mlflow.db``,
    artifacts under ``tmp_path``, no inherited parent run); returns a function ``params -> path``."""
    import yaml

    def write(params: dict) -> Path:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        monkeypatch.delenv("FACELANDMARKS_PARENT_RUN_ID", raising=False)
        params["tracking"]["artifact_location"] = str(tmp_path / "mlartifacts")
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        return path

    return write


def write_stage_faces(root: Path, faces, dataset: str, splits: list[str]) -> tuple[list[dict], list[dict]]:
    """Write a CropSet's crops as PNGs under ``root/data/interim/crops/<dataset>/``; return the rows of
    ``crops.parquet`` and ``augmented.parquet`` (variant 0, train faces only) for the given split of each face."""
    from facelandmarks.io.images import write_image

    crops, augmented = [], []
    for i, split in enumerate(splits):
        rel = f"data/interim/crops/{dataset}/{i}.png"
        write_image(root / rel, faces.images[i])
        row = {"face_id": str(faces.face_ids[i]), "dataset": dataset, "subset": "s", "split": split,
               "visible": faces.visible[i], "scheme": "ibug68"}
        crops.append({**row, "crop_path": rel, "crop_landmarks": faces.landmarks[i]})
        if split == "train":
            augmented.append({**row, "variant": 0, "image_path": rel, "landmarks": faces.landmarks[i]})
    return crops, augmented
