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

__all__ = ["face_errors", "group_masks", "group_metrics", "metrics_tree", "ced_tables", "headline_metrics"]


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
        one row per face with ``found`` (bool: the detector found it; always True in the crops protocol),
        ``det_iou`` and ``nme_<normaliser>`` (fraction of the normalising distance; a missed face's NME is
        that of its fallback-box prediction, ``inf`` when it has none). Faces whose normalising distance is
        zero are dropped. Formula: :func:`facelandmarks.metrics.nme.nme`.
    """
    rows = faces[faces["face_id"].isin(face_ids) & (faces["face_id"].isin(preds.landmarks.keys()) | faces["face_id"].isin(preds.missed))]
    rows = rows.reset_index(drop=True)
    out = rows.drop(columns=[c for c in ("landmarks", "visible", "bbox") if c in rows.columns]).copy()
    n = len(rows)
    if n == 0:
        return out.assign(found=pd.Series(dtype=bool), **{f"nme_{k}": pd.Series(dtype=float) for k in normalisers})
    gt = np.stack(rows["landmarks"].to_numpy()).astype(np.float64)
    vis = np.stack(rows["visible"].to_numpy()).astype(bool)
    has_pred = rows["face_id"].isin(preds.landmarks.keys()).to_numpy()
    found = has_pred & ~rows["face_id"].isin(preds.missed).to_numpy()
    pred = np.full_like(gt, np.nan)
    for i, fid in enumerate(rows["face_id"]):
        if has_pred[i]:
            pred[i] = preds.landmarks[fid]
    out["found"] = found
    out["det_iou"] = [preds.det_iou.get(f, math.nan) for f in rows["face_id"]]
    keep = np.ones(n, bool)
    for kind in normalisers:
        d = normaliser(gt, scheme, kind)
        keep &= d > 0
        e = np.full(n, np.inf)
        ok = has_pred & (d > 0)
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
        ``{"faces", "nme_<normaliser>"..., "failure_rate_08", "auc_08", ...}`` and, end to end,
        ``"detected"`` (fraction of faces the detector found), ``"faces_detected"`` and
        ``"nme_<normaliser>_detected"``. ``nme_<normaliser>`` is the mean over ALL faces of the group (end to
        end: a missed face contributes its fallback-box NME); ``..._detected`` is the mean over detected
        faces only, reported beside it and labelled as such. Failure rate and AUC are over all faces of
        ``nme_<curve_normaliser>``, a missed face counting as ``inf`` (a failure at every threshold).
    """
    out: dict[str, Any] = {"faces": int(len(errors))}
    found = errors["found"].to_numpy(bool)
    if end_to_end:
        out["detected"] = round(float(found.mean()), decimals) if len(errors) else None
        out["faces_detected"] = int(found.sum())
    for k in normalisers:
        e = errors[f"nme_{k}"].to_numpy(float)
        e = e[np.isfinite(e)]
        out[f"nme_{k}"] = round(float(e.mean()), decimals) if len(e) else None
        if end_to_end:
            d = errors.loc[found, f"nme_{k}"].to_numpy(float)
            out[f"nme_{k}_detected"] = round(float(d.mean()), decimals) if len(d) else None
    curve = np.where(found, errors[f"nme_{curve_normaliser}"].to_numpy(float), np.inf)
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
    """CED curves of every model, protocol, data set and split (all faces of the group; a face the
    detector missed counts as ``inf``, never within any error).

    Returns:
        ``{(model, protocol, dataset, split): DataFrame(nme, fraction)}``.
    """
    out = {}
    for (model, protocol), df in errors.items():
        for (dataset, split), g in df.groupby(["dataset", "split"], sort=True):
            e = np.where(g["found"].to_numpy(bool), g[f"nme_{curve_normaliser}"].to_numpy(float), np.inf)
            x, f = ced_curve(e, max_error, step)
            out[(model, protocol, str(dataset), str(split))] = pd.DataFrame({"nme": x.round(6), "fraction": f.round(6)})
    return out


def headline_metrics(tree: dict[str, Any], key: str = "nme_inter_ocular") -> dict[str, float]:
    """The numbers a pipeline is compared by, from a :func:`metrics_tree`: per model, data set, split and
    protocol, the mean NME over ALL faces of the data set (``all`` group) and, end to end, the detection rate.

    Returns:
        ``{"<model>.<dataset>.<split>.<crops|e2e>.nme_io": fraction, "<...>.e2e.detected": fraction, ...}``.
    """
    out: dict[str, float] = {}
    short = {"crops": "crops", "end_to_end": "e2e"}
    for model, protocols in tree.items():
        if not isinstance(protocols, dict):
            continue
        for protocol, datasets in protocols.items():
            for dataset, splits in datasets.items():
                for split, groups in splits.items():
                    a = groups.get("all") or {}
                    name = f"{model}.{dataset}.{split}.{short.get(protocol, protocol)}"
                    if a.get(key) is not None:
                        out[f"{name}.nme_io"] = float(a[key])
                    if a.get("detected") is not None:
                        out[f"{name}.detected"] = float(a["detected"])
    return out
