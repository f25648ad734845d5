"""From predictions to numbers: per-face NME, then NME / failure rate / AUC per data set, split and subset.

Groups reported for each data set and split: ``all``; each ``subset`` (300-W: ``afw``, ``helen``;
InfAnFace: ``ads``, ``google2``, ``youtube2``); and each condition flag a face carries (InfAnFace:
``turned``, ``occluded``, ``expressive``, ``tilted``: the faces with the flag set).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from facelandmarks.evaluate.protocols import Predictions
from facelandmarks.metrics.ced import ced_curve, summarize
from facelandmarks.metrics.nme import nme, normaliser
from facelandmarks.schemes import LandmarkScheme

__all__ = ["face_errors", "group_masks", "group_metrics", "metrics_tree", "ced_tables"]


def face_errors(
    faces: pd.DataFrame,
    preds: Predictions,
    scheme: LandmarkScheme,
    normalisers: list[str],
    face_ids: set[str],
) -> pd.DataFrame:
    """Per-face NME of one model under one protocol.

    Args:
        faces: annotation rows (``face_id``, ``dataset``, ``subset``, ``split``, ``landmarks``, ``visible``,
            flags).
        preds: the model's predictions.
        scheme: landmark scheme of the annotations.
        normalisers: e.g. ``["inter_ocular", "inter_pupil", "box"]``.
        face_ids: the faces this model was evaluated on.
    Returns:
        one row per face with ``found`` (bool) and ``nme_<normaliser>`` (fraction; ``inf`` when the face was
        missed by the detector). Faces whose normalising distance is zero are dropped.
    """
    rows = faces[faces["face_id"].isin(face_ids) & (faces["face_id"].isin(preds.landmarks.keys()) | faces["face_id"].isin(preds.missed))]
    rows = rows.reset_index(drop=True)
    out = rows.drop(columns=[c for c in ("landmarks", "visible", "bbox") if c in rows.columns]).copy()
    n = len(rows)
    if n == 0:
        return out.assign(found=pd.Series(dtype=bool), **{f"nme_{k}": pd.Series(dtype=float) for k in normalisers})
    gt = np.stack(rows["landmarks"].to_numpy()).astype(np.float64)
    vis = np.stack(rows["visible"].to_numpy()).astype(bool)
    found = rows["face_id"].isin(preds.landmarks.keys()).to_numpy()
    pred = np.full_like(gt, np.nan)
    for i, fid in enumerate(rows["face_id"]):
        if found[i]:
            pred[i] = preds.landmarks[fid]
    out["found"] = found
    out["det_iou"] = [preds.det_iou.get(f, math.nan) for f in rows["face_id"]]
    keep = np.ones(n, bool)
    for kind in normalisers:
        d = normaliser(gt, scheme, kind)
        keep &= d > 0
        e = np.full(n, np.inf)
        ok = found & (d > 0)
        if ok.any():
            e[ok] = nme(pred[ok], gt[ok], d[ok], vis[ok])
        out[f"nme_{kind}"] = e
    return out[keep].reset_index(drop=True)


def group_masks(errors: pd.DataFrame, flags: list[str]) -> dict[str, np.ndarray]:
    """Boolean row masks of the reported groups: ``all``, each subset, each flag that some face has set."""
    masks = {"all": np.ones(len(errors), bool)}
    for s in sorted(errors["subset"].dropna().unique()):
        masks[str(s)] = (errors["subset"] == s).to_numpy()
    for f in flags:
        if f in errors.columns:
            m = errors[f].fillna(False).astype(bool).to_numpy()
            if m.any():
                masks[f] = m
    return masks


def group_metrics(errors: pd.DataFrame, normalisers: list[str], curve_normaliser: str,
                  thresholds: list[float], end_to_end: bool, decimals: int = 5) -> dict[str, Any]:
    """Numbers of one group of faces.

    Returns:
        ``{"faces", ["detected",] "nme_<normaliser>"..., "failure_rate_08", "auc_08", ...}``: mean NME over
        found faces per normaliser; failure rate and AUC over ALL faces (missed = failure) of
        ``nme_<curve_normaliser>``; ``detected`` is the fraction of faces found (end to end only).
    """
    out: dict[str, Any] = {"faces": int(len(errors))}
    found = errors["found"].to_numpy(bool)
    if end_to_end:
        out["detected"] = round(float(found.mean()), decimals) if len(errors) else None
    for k in normalisers:
        e = errors.loc[found, f"nme_{k}"].to_numpy(float)
        out[f"nme_{k}"] = round(float(e.mean()), decimals) if len(e) else None
    curve = errors[f"nme_{curve_normaliser}"].to_numpy(float)
    for key, v in summarize(curve, tuple(thresholds)).items():
        out[key] = round(v, decimals)
    return out


def metrics_tree(errors: dict[tuple[str, str], pd.DataFrame], normalisers: list[str], curve_normaliser: str,
                 thresholds: list[float], flags: list[str]) -> dict[str, Any]:
    """All numbers: ``{model: {protocol: {dataset: {split: {group: group_metrics}}}}}``."""
    tree: dict[str, Any] = {}
    for (model, protocol), df in errors.items():
        node = tree.setdefault(model, {}).setdefault(protocol, {})
        for (dataset, split), g in df.groupby(["dataset", "split"], sort=True):
            g = g.reset_index(drop=True)
            node.setdefault(str(dataset), {})[str(split)] = {
                name: group_metrics(g[m], normalisers, curve_normaliser, thresholds, protocol == "end_to_end")
                for name, m in group_masks(g, flags).items()
            }
    return tree


def ced_tables(errors: dict[tuple[str, str], pd.DataFrame], curve_normaliser: str, max_error: float,
               step: float) -> dict[tuple[str, str, str, str], pd.DataFrame]:
    """CED curves of every model, protocol, data set and split (all faces of the group).

    Returns:
        ``{(model, protocol, dataset, split): DataFrame(nme, fraction)}``.
    """
    out = {}
    for (model, protocol), df in errors.items():
        for (dataset, split), g in df.groupby(["dataset", "split"], sort=True):
            x, f = ced_curve(g[f"nme_{curve_normaliser}"].to_numpy(float), max_error, step)
            out[(model, protocol, str(dataset), str(split))] = pd.DataFrame({"nme": x.round(6), "fraction": f.round(6)})
    return out
