"""A screenshot of the MLflow UI comparing pipeline runs, taken with a real browser for the README.

Starts ``mlflow ui`` on 127.0.0.1 against the project's store, opens MLflow's compare-runs page for the newest
pipeline (parent) runs of the experiment in headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium), and saves a PNG. The page shows each pipeline's key params (backbone, init, input size,
loss, data, epochs) and headline metrics (NME over all faces per model, data set, split and protocol).

Usage::

    python -m benchmarks.mlflow_ui --out reports/figures/mlflow_compare.png [--runs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

__all__ = ["pipeline_runs", "screenshot"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pipeline_runs(tracking_uri: str, experiment: str, n: int) -> tuple[str, list[str]]:
    """The experiment id and the ids of its ``n`` newest finished pipeline (parent) runs that hold metrics.

    Raises:
        LookupError: no such experiment or no finished pipeline run with metrics.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"{tracking_uri}: no experiment {experiment!r}")
    runs = client.search_runs([exp.experiment_id], "tags.`facelandmarks.pipeline` = 'true' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=50)
    runs = [r for r in runs if r.data.metrics][:n]
    if not runs:
        raise LookupError(f"{tracking_uri}: no finished pipeline run with metrics in {experiment!r}")
    return exp.experiment_id, [r.info.run_id for r in runs]


def screenshot(tracking_uri: str, experiment: str, out: Path, n: int = 4, width: int = 1600, height: int = 1100) -> Path:
    """Serve the MLflow UI, open the compare-runs page of the newest pipeline runs, save a PNG.

    Raises:
        LookupError: nothing to compare; RuntimeError: the UI did not start.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    exp_id, run_ids = pipeline_runs(tracking_uri, experiment, n)
    port = _free_port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
                               "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    driver = None
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"mlflow ui did not start; log: {log.name}")
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  f"--user-data-dir={tempfile.mkdtemp()}", f"--window-size={width},{height}"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        if len(run_ids) > 1:  # side by side: key params and headline metrics of each pipeline
            query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([exp_id])})
            driver.get(f"{base}/#/compare-runs?{query}")
        else:  # one pipeline so far: its run page (params and metrics)
            driver.get(f"{base}/#/experiments/{exp_id}/runs/{run_ids[0]}")
        time.sleep(8)  # the single-page app renders its tables after several API calls
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        return out
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("reports/figures/mlflow_compare.png"))
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    ap.add_argument("--experiment", default="facelandmarks")
    a = ap.parse_args(argv)
    print(screenshot(a.tracking_uri, a.experiment, a.out, a.runs))


if __name__ == "__main__":
    main()
