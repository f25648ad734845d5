"""The ``register`` stage: register the finetuned model in MLflow and move ``@champion`` only to a better model.

Steps (params.yaml ``register``):

1. hash the checkpoint; if a version of ``model_name`` already holds these exact weights (tag
   ``checkpoint_sha256``), reuse it: a repeated run registers nothing new;
2. measure the challenger (this checkpoint) and the current ``@champion`` on the same faces
   (``register.compare``: InfAnFace test split, crops protocol, inter-ocular NME by default);
3. otherwise log the checkpoint as a new registered version (:func:`log_landmark_model`), tagged with
   its hash and its number;
4. move the alias only when the challenger wins (:func:`facelandmarks.registry.decision.decide`);
5. log both numbers and the decision to MLflow (a child run of the pipeline) and to
   ``reports/register.json``.

A champion that can no longer be loaded (deleted artifacts, an incompatible checkpoint) is reported and
replaced: serving must always find a working ``@champion``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from facelandmarks.data.table import read_table
from facelandmarks.fsutil import write_json
from facelandmarks.params import StrictModel, load_params, section
from facelandmarks.registry.decision import CompareParams, decide, measure
from facelandmarks.registry.models import SHA_TAG, current_champion, find_version, log_landmark_model, sha256_file

__all__ = ["RegisterParams", "register", "main"]

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
    return None if v is None or v != v else round(float(v), 6)


def register(params: RegisterParams, scheme: str = "ibug68", tracking_uri: str | None = None) -> dict[str, Any]:
    """Register the checkpoint and decide on the alias (in the active MLflow run, if any).

    Returns:
        the report: ``model_name``, ``alias``, ``metric``, ``compared_on``, ``challenger`` (version, sha256,
        value), ``champion_before`` (version, value) or None, ``registered_new_version``, ``promoted``,
        ``champion_after``, ``reason``.
    Raises:
        FileNotFoundError: no checkpoint or annotation table.
    """
    import mlflow

    from facelandmarks.inference import FaceLandmarker

    t0 = time.perf_counter()
    ckpt = Path(params.checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found (run the finetune stage)")
    sha = sha256_file(ckpt)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    existing = find_version(client, params.model_name, sha)
    champion = current_champion(client, params.model_name, params.alias)
    cmp = params.compare
    faces = read_table(params.annotations)

    challenger = FaceLandmarker.load(ckpt, device=params.device)
    models = {"challenger": challenger}
    champion_error = None
    same = champion is not None and champion.tags.get(SHA_TAG) == sha
    if champion is not None and not same:
        uri = f"models:/{params.model_name}@{params.alias}"
        try:
            models["champion"] = FaceLandmarker.load(uri, device=params.device, tracking_uri=tracking_uri,
                                                      detector=challenger.detector)
        except Exception as e:  # a champion that no longer loads must not block a working challenger
            champion_error = f"{type(e).__name__}: {e}"
            log.warning("register: the current champion %s cannot be loaded (%s); it will be replaced", uri, champion_error)
    compared_on = {"dataset": cmp.dataset, "split": cmp.split, "protocol": cmp.protocol,
                   "faces": int(((faces["dataset"] == cmp.dataset) & (faces["split"] == cmp.split)).sum())}
    if compared_on["faces"]:
        values = measure(models, faces, cmp, scheme, params.match_iou)
    else:  # nothing to measure on (e.g. a tiny data set): only a first model is promoted
        log.warning("register: no face of %s/%s to compare on", cmp.dataset, cmp.split)
        values = {"challenger": float("nan")}
    value = values["challenger"]
    champion_value = values.get("champion", value if same else None)

    if same:
        promote, reason = False, f"this checkpoint is already the champion (version {champion.version}); nothing to do"
    elif champion is not None and champion_error is not None:
        promote, reason = True, f"the current champion (version {champion.version}) cannot be loaded ({champion_error})"
    elif not compared_on["faces"]:
        promote = champion is None
        reason = (f"no face of {cmp.dataset}/{cmp.split} to compare on: "
                  + ("no champion yet, the challenger becomes champion" if promote else "the champion is kept"))
    else:
        d = decide(value, champion_value, cmp.metric, cmp.min_improvement)
        promote, reason = d.promote, d.reason

    if existing is not None:
        version = existing.version
        registered_new = False
    else:
        tags = {SHA_TAG: sha, "compare.metric": cmp.metric, "compare.value": f"{value:.6f}",
                "compare.split": f"{cmp.dataset}/{cmp.split}/{cmp.protocol}", "compare.faces": str(compared_on["faces"])}
        info = log_landmark_model(ckpt, registered_model_name=params.model_name, tags=tags)
        version = str(info.registered_model_version)
        for k, v in tags.items():
            client.set_model_version_tag(params.model_name, version, k, v)
        registered_new = True
    if promote:
        client.set_registered_model_alias(params.model_name, params.alias, version)
    after = current_champion(client, params.model_name, params.alias)
    report = {
        "model_name": params.model_name,
        "alias": params.alias,
        "metric": cmp.metric,
        "compared_on": compared_on,
        "challenger": {"version": str(version), "checkpoint_sha256": sha, "value": _num(value)},
        "champion_before": None if champion is None else {
            "version": str(champion.version),
            "value": _num(champion_value),
            "error": champion_error,
        },
        "registered_new_version": registered_new,
        "promoted": promote,
        "champion_after": None if after is None else str(after.version),
        "reason": reason,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return report


def main(params_path: str = "params.yaml") -> dict[str, Any]:
    """Run the ``register`` stage (cwd = project root). Returns the report."""
    import mlflow

    from facelandmarks.mlflow_runs import stage_run
    from facelandmarks.train.runner import set_threads

    all_params = load_params(params_path)
    params = section(all_params, "register", RegisterParams, params_path)
    set_threads(params.num_threads)
    with stage_run("register", all_params, run_name=f"register {params.model_name}@{params.alias}"):
        report = register(params, str(all_params.get("scheme", "ibug68")))
        metric = report["metric"]
        if report["challenger"]["value"] is not None:
            mlflow.log_metric(f"challenger_{metric}", report["challenger"]["value"])
        before = report["champion_before"]
        if before is not None and before["value"] is not None:
            mlflow.log_metric(f"champion_{metric}", before["value"])
        mlflow.set_tags({
            "register.decision": "promoted" if report["promoted"] else "kept",
            "register.reason": report["reason"][:5000],
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
