"""The ``register`` stage: register the finetuned model in MLflow and move ``@champion`` only to a better model.

Steps (params.yaml ``register``):

1. hash the checkpoint; if a version of ``model_name`` already holds these exact weights (tag
   ``checkpoint_sha256``), reuse it: a repeated run registers nothing new;
2. measure the challenger (this checkpoint) and the current ``@champion`` NOW, on the same VALIDATION
   faces (``register.compare``: crops protocol, inter-ocular NME by default): the target (InfAnFace val)
   and the guard (300-W val); the test splits are measured beside them for the report only;
   Faces the champion was trained on (the ``train`` rows of its version's split record,
   :data:`SPLITS_ARTIFACT`, e.g. after a change of the split rules) are left out for both models;
3. otherwise log the checkpoint as a new registered version (:func:`log_landmark_model`), tagged with
   its hash and its validation numbers, with the current split record (``face_id, dataset, split``);
4. move the alias only when the challenger beats the champion on the target by
   ``compare.target.min_improvement`` AND loses no more than ``compare.guard.max_regression`` on the
   guard (:func:`facelandmarks.registry.decision.decide`); a first model (no champion) is promoted;
5. log both comparisons (both models' numbers, faces counted), the margins and the decision to MLflow
   (a child run of the pipeline) and to ``reports/register.json``.

A champion that can no longer be loaded (deleted artifacts, an incompatible checkpoint) is reported and
replaced: serving must always find a working ``@champion``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field

from facelandmarks.data.table import read_table
from facelandmarks.fsutil import write_json
from facelandmarks.params import StrictModel, load_params, section
from facelandmarks.registry.decision import (
    CompareParams,
    compare,
    decide,
    higher_is_better,
    measure,
)
from facelandmarks.registry.models import (
    SHA_TAG,
    current_champion,
    find_version,
    log_landmark_model,
    sha256_file,
)

__all__ = ["SPLITS_ARTIFACT", "RegisterParams", "champion_train_faces", "main", "register", "report_metrics"]

log = logging.getLogger(__name__)


class RegisterParams(StrictModel):
    """The ``register`` section of params.yaml.

    Attributes:
        model_name: registered model name (``facelandmarks``).
        alias: the alias serving loads (``champion``).
        checkpoint: the challenger's checkpoint.
        compare: what challenger and champion are compared by, on the same faces.
        match_iou: end-to-end matching IoU (when ``compare.protocol`` is ``end_to_end``).
        device: ``auto``, ``cpu``, ``cuda``.
        num_threads: torch CPU threads (0 = default; ``FACELANDMARKS_NUM_THREADS`` wins).
        annotations: the annotation table.
        report: decision report (JSON).
    """

    model_name: str = "facelandmarks"
    alias: str = "champion"
    checkpoint: str = "models/finetune/model.pt"
    compare: CompareParams = Field(default_factory=CompareParams)
    match_iou: float = Field(0.3, ge=0.0, le=1.0)
    device: str = "auto"
    num_threads: int = Field(0, ge=0)
    annotations: str = "data/interim/annotations.parquet"
    report: str = "reports/register.json"


def _num(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else round(float(v), 6)


SPLITS_ARTIFACT = "register/splits.csv"
"""Artifact of a registered version's run: the annotation table's ``face_id, dataset, split`` when it was
registered, i.e. the splits its pipeline trained and validated on."""


def champion_train_faces(client: Any, version: Any) -> set[str] | None:
    """The face ids the registered ``version`` was trained on (its split record's ``train`` rows).

    Returns:
        the set, or None when the version has no split record (registered before records were kept) or it
        cannot be read.
    """
    import tempfile

    import pandas as pd

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(version.run_id, SPLITS_ARTIFACT, tmp)
            record = pd.read_csv(path, dtype=str)
    except Exception as e:  # noqa: BLE001  no record (an older version, deleted artifacts): any failure means unknown
        log.warning("register: no split record of version %s (%s: %s)", version.version, type(e).__name__, e)
        return None
    return set(record.loc[record["split"] == "train", "face_id"])


def register(params: RegisterParams, scheme: str = "ibug68", tracking_uri: str | None = None) -> dict[str, Any]:
    """Register the checkpoint and decide on the alias (in the active MLflow run, if any).

    Both models are loaded without executing code from the files (``torch.load(weights_only=True)`` in
    :func:`facelandmarks.model.checkpoint.read_checkpoint`) and measured now on the same faces.

    Returns:
        the report: ``model_name``, ``alias``, ``metric``, ``lower_is_better``, ``protocol``,
        ``selection_split``, ``challenger`` (version, sha256), ``champion_before`` (version, sha256, error,
        ``trained_on_faces_left_out``: per ``<dataset>/<split>``, faces left out of both models' numbers because
        the champion was trained on them (its version's split record :data:`SPLITS_ARTIFACT`); None when it
        has no record) or None, ``comparisons`` (``target`` and ``guard``: dataset, split, faces, both values, gain, its
        standard error, the margin, passed), ``reported_only`` (``<dataset>/<split>`` of the report splits:
        faces and both values; never used to choose), ``registered_new_version``, ``promoted``,
        ``champion_after``, ``reason``.
    Raises:
        FileNotFoundError: no checkpoint or annotation table.
    """
    import mlflow

    from facelandmarks.inference import FaceLandmarker

    ckpt = Path(params.checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found (run the finetune stage)")
    sha = sha256_file(ckpt)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    existing = find_version(client, params.model_name, sha)
    champion = current_champion(client, params.model_name, params.alias)
    cmp = params.compare
    table = read_table(params.annotations)
    faces = table

    challenger = FaceLandmarker.load(ckpt, device=params.device)
    models = {"challenger": challenger}
    champion_error = None
    same = champion is not None and champion.tags.get(SHA_TAG) == sha
    if champion is not None and not same:
        uri = f"models:/{params.model_name}@{params.alias}"
        try:
            models["champion"] = FaceLandmarker.load(uri, device=params.device, tracking_uri=tracking_uri,
                                                      detector=challenger.detector)
        except Exception as e:  # noqa: BLE001  a champion that no longer loads must not block a working challenger
            champion_error = f"{type(e).__name__}: {e}"
            log.warning("register: the current champion %s cannot be loaded (%s); it will be replaced", uri, champion_error)

    datasets = [cmp.target.dataset] + ([cmp.guard.dataset] if cmp.guard is not None else [])
    groups = list(dict.fromkeys([(d, cmp.split) for d in datasets]
                                + [(d, s) for s in cmp.report_splits for d in datasets]))
    # faces the champion was trained on (its pipeline's train split) are no validation faces for it: left out
    # for both models, so the two are still measured on the same faces
    champion_train = (champion_train_faces(client, champion) if "champion" in models else None)
    excluded = {}
    if champion_train:
        for d, s_ in groups:
            rows = (faces["dataset"] == d) & (faces["split"] == s_)
            excluded[f"{d}/{s_}"] = int((rows & faces["face_id"].isin(champion_train)).sum())
        faces = faces[~faces["face_id"].isin(champion_train)]
    measured = measure(models, faces, groups, cmp.protocol, cmp.metric, scheme, params.match_iou)
    if same:  # the champion is this very checkpoint: its numbers are the challenger's
        measured = {k: replace(m, values={**m.values, "champion": m.values["challenger"]},
                               per_face={**m.per_face, **({"champion": m.per_face["challenger"]}
                                                          if "challenger" in m.per_face else {})})
                    for k, m in measured.items()}
    target = compare(measured[(cmp.target.dataset, cmp.split)], "target", cmp.target.min_improvement, cmp.metric)
    guard = (None if cmp.guard is None else
             compare(measured[(cmp.guard.dataset, cmp.split)], "guard", cmp.guard.max_regression, cmp.metric))

    if same:
        promote, reason = False, f"this checkpoint is already the champion (version {champion.version}); nothing to do"
    elif champion is not None and champion_error is not None:
        promote, reason = True, f"the current champion (version {champion.version}) cannot be loaded ({champion_error})"
    else:
        d = decide(target, guard, cmp.metric, has_champion=champion is not None)
        promote, reason = d.promote, d.reason
        if "champion" in models and champion_train is None:
            reason += (f" (note: version {champion.version} has no record of its splits ({SPLITS_ARTIFACT}); it may have "
                       "been trained on some of these validation faces)")

    if existing is not None:
        version = existing.version
        registered_new = False
    else:
        tags = {SHA_TAG: sha, "compare.metric": cmp.metric, "compare.protocol": cmp.protocol,
                "compare.target": f"{cmp.target.dataset}/{cmp.split}",
                "compare.target.value": f"{_num(target.challenger)}", "compare.target.faces": str(target.faces)}
        if guard is not None:
            tags.update({"compare.guard": f"{cmp.guard.dataset}/{cmp.split}",
                         "compare.guard.value": f"{_num(guard.challenger)}", "compare.guard.faces": str(guard.faces)})
        info = log_landmark_model(ckpt, registered_model_name=params.model_name, tags=tags)
        version = str(info.registered_model_version)
        record = table[["face_id", "dataset", "split"]].sort_values("face_id")
        client.log_text(info.run_id, record.to_csv(index=False), SPLITS_ARTIFACT)
        for k, v in tags.items():
            client.set_model_version_tag(params.model_name, version, k, v)
        registered_new = True
    if promote:
        client.set_registered_model_alias(params.model_name, params.alias, version)
    after = current_champion(client, params.model_name, params.alias)
    # measured champion: its faces left out, or None when unknown (no record); not measured: nothing left out
    left_out = (excluded if champion_train is not None else None) if "champion" in models else {}
    reported = {}
    for dataset, split in groups:
        if split == cmp.split:
            continue
        m = measured[(dataset, split)]
        reported[f"{dataset}/{split}"] = {"faces": m.faces, "challenger": _num(m.values.get("challenger")),
                                          "champion": _num(m.values.get("champion"))}
    return {
        "model_name": params.model_name,
        "alias": params.alias,
        "metric": cmp.metric,
        "lower_is_better": not higher_is_better(cmp.metric),
        "protocol": cmp.protocol,
        "selection_split": cmp.split,
        "challenger": {"version": str(version), "checkpoint_sha256": sha},
        "champion_before": None if champion is None else {
            "version": str(champion.version),
            "checkpoint_sha256": champion.tags.get(SHA_TAG),
            "error": champion_error,
            # faces left out because the champion trained on them; None: it has no split record (unknown)
            "trained_on_faces_left_out": left_out,
        },
        "comparisons": {"target": target.to_dict(), **({"guard": guard.to_dict()} if guard is not None else {})},
        "reported_only": reported,
        "registered_new_version": registered_new,
        "promoted": promote,
        "champion_after": None if after is None else str(after.version),
        "reason": reason,
    }


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as flat MLflow metrics.

    ``<role>_challenger_<metric>``, ``<role>_champion_<metric>``, ``<role>_gain``, ``<role>_gain_se``,
    ``<role>_faces`` and ``<role>_margin`` for ``target`` and ``guard``; ``reported_<dataset>_<split>_challenger_<metric>``
    (and ``..._champion_...``) for the report-only splits. Missing values are left out.
    """
    metric = report["metric"]
    out: dict[str, float] = {}
    for role, c in report["comparisons"].items():
        margin = c.get("min_improvement", c.get("max_regression"))
        for key, v in ((f"{role}_challenger_{metric}", c["challenger"]), (f"{role}_champion_{metric}", c["champion"]),
                       (f"{role}_gain", c["gain"]), (f"{role}_gain_se", c["gain_se"]), (f"{role}_faces", c["faces"]),
                       (f"{role}_margin", margin)):
            if v is not None:
                out[key] = float(v)
    for name, r in report["reported_only"].items():
        tag = name.replace("/", "_")
        for who in ("challenger", "champion"):
            if r[who] is not None:
                out[f"reported_{tag}_{who}_{metric}"] = float(r[who])
        out[f"reported_{tag}_faces"] = float(r["faces"])
    return out


def main(params_path: str = "params.yaml") -> dict[str, Any]:
    """Run the ``register`` stage (cwd = project root). Returns the report."""
    import mlflow

    from facelandmarks.mlflow_runs import stage_run
    from facelandmarks.device import set_threads

    all_params = load_params(params_path)
    params = section(all_params, "register", RegisterParams, params_path)
    set_threads(params.num_threads)
    with stage_run("register", all_params, run_name=f"register {params.model_name}@{params.alias}"):
        report = register(params, str(all_params.get("scheme", "ibug68")))
        mlflow.log_metrics(report_metrics(report))
        before = report["champion_before"]
        mlflow.set_tags({
            "register.decision": "promoted" if report["promoted"] else "kept",
            "register.reason": report["reason"][:5000],
            "register.selection_split": report["selection_split"],
            "register.challenger_version": report["challenger"]["version"],
            "register.champion_before": "" if before is None else before["version"],
            "register.champion_after": report["champion_after"] or "",
            "register.registered_new_version": str(report["registered_new_version"]).lower(),
        })
        write_json(params.report, report)
        mlflow.log_artifact(params.report)
    print(f"register: {params.model_name} version {report['challenger']['version']} "
          f"({'new' if report['registered_new_version'] else 'already registered'}); "
          f"{'PROMOTED to' if report['promoted'] else 'not promoted to'} @{params.alias}: {report['reason']}")
    return report
