"""Entry point of the ``download`` stage (``pipelines/download.py``)."""

from __future__ import annotations

import logging

from facelandmarks.data.build import DownloadParams, build_annotations
from facelandmarks.data.preview import plot_preview
from facelandmarks.data.table import write_table
from facelandmarks.fsutil import write_json
from facelandmarks.params import load_params, section

log = logging.getLogger(__name__)


def main(params_path: str = "params.yaml") -> dict:
    """Run the stage with params from ``params_path`` (cwd = project root). Returns the report."""
    params = load_params(params_path)
    cfg = section(params, "download", DownloadParams, params_path)
    df, report = build_annotations(cfg, params.get("scheme", "ibug68"), int(params.get("seed", 0)))
    write_table(df, cfg.table)
    write_json(cfg.report, report)
    plot_preview(df, cfg.preview.out, cfg.preview.faces_per_dataset, seed=int(params.get("seed", 0)))
    for name, d in report["datasets"].items():
        print(f"{name}: {d['faces_valid']} valid of {d['faces_read']} read, {d['faces_invalid']} invalid "
              f"{d['invalid_by_reason']}, splits {d['splits']} (groups {d['groups_per_split']})")
    return report
