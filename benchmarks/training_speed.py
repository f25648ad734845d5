"""Training speed: images per second of the default configuration, and the wall time of a full ``dvc repro``.

Images per second come from the training stages' own reports (``reports/pretrain.json``,
``reports/finetune.json``), measured during the real training of the default params. The wall time of a
full pipeline is measured by running ``facelandmarks repro --force`` (every stage, one MLflow parent run)
when asked (``python -m benchmarks.run --repro``; it retrains everything); otherwise the last measured value
is carried over from ``benchmarks/results.json`` with the date it was measured.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["STAGE_REPORTS", "find_throughput", "training_throughput", "time_repro"]

log = logging.getLogger(__name__)

#: Training stage -> its metrics file.
STAGE_REPORTS = {"pretrain": Path("reports/pretrain.json"), "finetune": Path("reports/finetune.json")}

#: Keys under which a training report may give its throughput (first found wins).
THROUGHPUT_KEYS = ("train_images_per_second", "images_per_second", "train_images_per_s", "images_per_s")


def find_throughput(report: dict) -> float | None:
    """Training images per second in a stage report (searched recursively under :data:`THROUGHPUT_KEYS`).

    Returns:
        The first value found (depth-first, keys in :data:`THROUGHPUT_KEYS` order), or None.
    """
    if not isinstance(report, dict):
        return None
    for key in THROUGHPUT_KEYS:
        v = report.get(key)
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    for v in report.values():
        found = find_throughput(v) if isinstance(v, dict) else None
        if found is not None:
            return found
    return None


def _field(report: dict, *keys: str):
    for k in keys:
        if k in report:
            return report[k]
    return None


def training_throughput(reports: dict[str, Path] | None = None) -> dict:
    """Images per second of each training stage, from its report.

    Args:
        reports: stage -> report path (:data:`STAGE_REPORTS`).
    Returns:
        ``{stage: {"images_per_s", "report", "device", "train_s", "threads", "epochs", "backbone", "input_size"}
        or {"missing": reason}}``. The training stages count augmented faces per second of epoch time
        (validation included), on the device and threads they ran with.
    """
    out = {}
    for stage, path in (reports or STAGE_REPORTS).items():
        p = Path(path)
        if not p.is_file():
            out[stage] = {"missing": f"{p} not found (run `dvc repro`)"}
            continue
        try:
            report = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            out[stage] = {"missing": f"{p}: unreadable ({e})"}
            continue
        ips = find_throughput(report)
        out[stage] = {
            "images_per_s": ips,
            "report": str(p),
            "device": _field(report, "device"),
            "train_s": _field(report, "train_seconds", "wall_s"),
            "threads": _field(report, "threads"),
            "epochs": _field(report, "epochs_run"),
            "backbone": _field(report, "backbone"),
            "input_size": _field(report, "input_size"),
        }
        if ips is None:
            out[stage]["missing"] = f"{p} gives no images-per-second figure (keys tried: {', '.join(THROUGHPUT_KEYS)})"
    return out


def time_repro(command: list[str] | None = None, cwd: str | os.PathLike = ".") -> dict:
    """Run the whole pipeline and time it.

    Args:
        command: the pipeline command (default ``facelandmarks repro --force``: every stage reruns).
    Returns:
        ``{"wall_s", "command", "returncode"}``.
    Raises:
        RuntimeError: the pipeline failed (the message gives its exit code).
    """
    exe = Path(sys.executable).with_name("facelandmarks")
    cmd = command or [str(exe) if exe.exists() else "facelandmarks", "repro", "--force"]
    t = time.perf_counter()
    rc = subprocess.call(cmd, cwd=cwd)
    wall = time.perf_counter() - t
    if rc != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {rc} after {wall:.0f} s")
    return {"wall_s": wall, "command": " ".join(cmd), "returncode": rc}
