"""Environment for quiet, offline, reproducible runs (tests, CI, benchmarks): ``../shared/STACK.md``.

No update checks, no telemetry, no Hugging Face hub retries (it is unreachable here: fail fast).
"""

QUIET_ENV: dict[str, str] = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "HF_HUB_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
