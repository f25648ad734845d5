# The two commands of the README:
#   make repro   creates .venv, installs, `dvc pull`, `dvc repro` (the whole pipeline, default params)
#   make test    creates .venv, installs, `dvc pull`, runs the test suite (what CI runs: .ci/run)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 \
       BENTOML_DO_NOT_TRACK=true DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false

.PHONY: setup data repro test bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

data: setup
	@$(BIN)/dvc pull data.dvc || { \
	  echo ""; \
	  echo "dvc pull failed: the default DVC remote ($$($(BIN)/dvc remote list | head -1)) is not reachable from here."; \
	  echo "Point DVC at your own copy of the data (same hashes as data.dvc):"; \
	  echo "  $(BIN)/dvc remote add -d -f mine /path/or/s3://bucket/facelandmarks-data && make data"; \
	  echo "or fetch the public archives instead: set url + sha256 for each data set in params.yaml"; \
	  echo "(download.datasets; see README 'Data') and run: make repro"; \
	  exit 1; }

repro: data
	$(BIN)/facelandmarks repro

test: data
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m benchmarks.run
