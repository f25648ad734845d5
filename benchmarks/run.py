"""``python -m benchmarks.run`` (``make bench``): every benchmark in one run, then the report and README tables.

Run it from the project root after ``make repro`` (it needs ``data/raw``, ``data/interim/annotations.parquet``,
the champion model, and the ``bench`` extra: ``pip install -e '.[bench]'``). Each section can be skipped; a
skipped section keeps its previous figures in ``benchmarks/results.json``. ``--quick`` is a small trial run
(a few faces, frames and requests) written to ``benchmarks/out/`` and never into the README.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from facelandmarks.quiet import QUIET_ENV  # noqa: E402
CHAMPION = "champion"
FALLBACK_CHECKPOINT = Path("models/finetune/model.pt")

app = typer.Typer(add_completion=False, help=__doc__)
log = logging.getLogger("benchmarks")


def _tracking_uri(params: dict) -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI") or (params.get("tracking") or {}).get("tracking_uri")


def _registered_name(params: dict) -> str:
    reg = params.get("register") or {}
    return reg.get("model_name") or reg.get("name") or "facelandmarks"


@contextlib.contextmanager
def resolve_model(spec: str, params: dict):
    """Yield ``(checkpoint path, source)`` for ``--model``.

    ``champion`` = the MLflow registry's ``models:/<name>@champion`` (tracking URI from MLFLOW_TRACKING_URI or
    params), falling back to ``models/finetune/model.pt`` when the registry has no champion; anything else is
    passed to :func:`facelandmarks.inference.source.local_checkpoint` (a path or an MLflow URI).

    Raises:
        facelandmarks.inference.source.ModelSourceError: nothing usable found.
    """
    from facelandmarks.inference.source import ModelSourceError, local_checkpoint

    if spec != CHAMPION:
        with local_checkpoint(spec, _tracking_uri(params)) as path:
            yield path, spec
        return
    uri = f"models:/{_registered_name(params)}@champion"
    tracking = _tracking_uri(params)
    with contextlib.ExitStack() as stack:
        try:
            if tracking and tracking.startswith("sqlite:///") and not Path(tracking[len("sqlite:///"):]).is_file():
                raise ModelSourceError(f"{tracking}: no MLflow store yet")
            path, source = stack.enter_context(local_checkpoint(uri, tracking)), uri
        except ModelSourceError as e:
            if not FALLBACK_CHECKPOINT.is_file():
                raise
            log.warning("no registered champion (%s): using %s", e, FALLBACK_CHECKPOINT)
            path, source = FALLBACK_CHECKPOINT, str(FALLBACK_CHECKPOINT)
        yield path, source


@app.command()
def main(
    model: Annotated[str, typer.Option(help="`champion` (registry alias, else models/finetune/model.pt), a checkpoint path or an MLflow URI")] = CHAMPION,
    skip_accuracy: Annotated[bool, typer.Option("--skip-accuracy")] = False,
    skip_speed: Annotated[bool, typer.Option("--skip-speed")] = False,
    skip_serving: Annotated[bool, typer.Option("--skip-serving")] = False,
    skip_detect_size: Annotated[bool, typer.Option("--skip-detect-size")] = False,
    skip_quantization: Annotated[bool, typer.Option("--skip-quantization")] = False,
    skip_training: Annotated[bool, typer.Option("--skip-training")] = False,
    repro: Annotated[bool, typer.Option("--repro", help="also time a full `facelandmarks repro --force` (retrains everything)")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="small trial run into benchmarks/out/, README untouched")] = False,
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 2,
    frames: Annotated[int, typer.Option(help="video frames for end-to-end speed (0 = all)")] = 0,
    requests: Annotated[int, typer.Option(help="requests per serving mode")] = 1000,
    concurrency: Annotated[int, typer.Option(help="concurrent serving clients (the good-photos throughput mode always uses 8)")] = 16,
    calibration_faces: Annotated[int, typer.Option(help="training faces for dlib's box conversion")] = 200,
    results: Annotated[Path | None, typer.Option(help="results JSON (default benchmarks/results.json)")] = None,
    markdown: Annotated[Path | None, typer.Option(help="results markdown (default benchmarks/results.md)")] = None,
    readme: Annotated[Path | None, typer.Option(help="README whose bench block is replaced")] = Path("README.md"),
    no_readme: Annotated[bool, typer.Option("--no-readme", help="leave README.md alone")] = False,
) -> None:
    """Measure accuracy, speed, serving and training against dlib, and write the report."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    import torch

    from benchmarks import environment, report
    from facelandmarks.model.checkpoint import read_checkpoint
    from facelandmarks.params import load_params

    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    out_dir = Path("benchmarks/out") if quick else Path("benchmarks")
    results = results or out_dir / "results.json"
    markdown = markdown or out_dir / "results.md"
    if quick or no_readme:
        readme = None
    if readme is not None:  # fail now, not after minutes of measuring
        report.replace_marked_block(Path(readme).read_text(), "", str(readme))
    params = load_params("params.yaml")
    previous = report.load_results(results)
    devices = environment.speed_devices()
    new: dict = {"generated": environment.now_iso(), "machine": environment.machine_info(threads),
                 "devices": devices, "quick": quick}
    timings: dict[str, float] = {}

    repro_timing = None
    if repro and not skip_training:  # first, so that every figure below is of the freshly trained champion
        from benchmarks.training_speed import time_repro

        repro_timing = {**time_repro(), "measured_at": new["generated"]}
        timings["repro"] = repro_timing["wall_s"]

    need_model = not (skip_accuracy and skip_speed and skip_serving and skip_detect_size and skip_quantization)
    with resolve_model(model, params) if need_model else contextlib.nullcontext((None, None)) as (path, source):
        if path is not None:
            blob = read_checkpoint(path)
            cfg = blob["config"]
            new["model"] = {"source": source, "sha256": environment.file_digest(path), "backbone": cfg.get("backbone"),
                            "head": cfg.get("head"), "input_size": cfg.get("input_size"),
                            "meta": blob.get("meta") or {}}
        else:
            new["model"] = previous.get("model")
        if not skip_accuracy:
            from benchmarks.accuracy import AccuracyOptions, run_accuracy

            opts = AccuracyOptions(calibration_faces=20 if quick else calibration_faces, max_faces=10 if quick else 0,
                                   seed=int(params.get("seed", 42)))
            new["accuracy"] = {**run_accuracy(path, params, opts), "measured_at": new["generated"]}
            timings["accuracy"] = new["accuracy"]["seconds"]
        if not skip_speed:
            from benchmarks.speed import SpeedOptions, run_speed

            opts = SpeedOptions(threads=threads, max_frames=20 if quick and not frames else frames,
                                runs=5 if quick else 40, dlib_runs=20 if quick else 200)
            new["speed"] = {**run_speed(path, devices, opts), "measured_at": new["generated"]}
            timings["speed"] = new["speed"]["seconds"]
        if not skip_quantization:
            from benchmarks.quantization import QuantizationOptions, run_quantization

            opts = QuantizationOptions(threads=threads, max_faces=10 if quick else 0, rounds=1 if quick else 3,
                                       runs=5 if quick else 20, calibration_faces=24 if quick else 240)
            new["quantization"] = {**run_quantization(path, opts), "measured_at": new["generated"]}
            timings["quantization"] = new["quantization"]["seconds"]
        if not skip_serving:
            from benchmarks.serving_load import ServingOptions, run_serving

            # the service serves the same model as the other sections (not whatever the registry holds now)
            env = {"FACELANDMARKS_MODEL_URI": str(Path(path).resolve())}
            opts = ServingOptions(requests=20 if quick else requests, concurrency=concurrency,
                                  warmup=2 if quick else 10, env=env)
            new["serving"] = {**run_serving(opts), "measured_at": new["generated"]}
            timings["serving"] = new["serving"]["seconds"]
        if not skip_detect_size:
            from benchmarks.detect_size import run_detect_size

            t_ds = time.perf_counter()
            serve = params.get("serve") or {}
            new["detect_size"] = {**run_detect_size(path, Path(params["evaluate"]["annotations"]),
                                                    sides=(0, 640, 480), min_score=float(serve.get("detect_min_score") or 0.0),
                                                    timed_photos=10 if quick else 40,
                                                    rotate_angles=serve.get("detect_rotate_angles")),
                                  "measured_at": new["generated"]}
            timings["detect_size"] = time.perf_counter() - t_ds
    if not skip_training:
        from benchmarks.training_speed import training_throughput

        new["training"] = {"throughput": training_throughput(), "measured_at": new["generated"]}
        if repro_timing:
            new["training"]["repro"] = repro_timing
        else:  # the latest whole pipeline the MLflow store holds (make repro logs one parent run)
            from benchmarks.training_speed import last_full_pipeline
            from facelandmarks.mlflow_runs import tracking_uri

            found = last_full_pipeline(tracking_uri(params), (params.get("tracking") or {}).get("experiment", "facelandmarks"))
            if found:
                new["training"]["repro"] = found
    for section in ("accuracy", "speed", "quantization", "serving", "detect_size"):
        if section in new:
            new[section]["model_sha256"] = (new.get("model") or {}).get("sha256")
    if not devices[1:]:
        new["gpu_note"] = "No GPU was available to this run; GPU speed figures were not measured."
    merged = report.merge_results(previous, new)
    merged["bench_seconds"] = {**timings, "total": time.perf_counter() - t0}
    report.write_report(merged, results, markdown, readme)
    typer.echo(f"wrote {results}, {markdown}" + (f" and the bench block of {readme}" if readme else "")
               + f" in {time.perf_counter() - t0:.0f} s")
    for t in report.evaluate_targets(merged):
        typer.echo(f"  [{ {True: 'met', False: 'MISSED', None: 'n/a'}[t['met']] }] {t['target']}: {t['measured']}")


if __name__ == "__main__":
    app()
