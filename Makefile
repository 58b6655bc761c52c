# The entry points a newcomer and CI use: `make test` on a fresh machine (it installs what it
# needs first); `docker compose up -d --build` for the stack (see README).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Marks an install that matches the current pins; redone when pyproject.toml or the lock change.
INSTALLED := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
DATA_API_PORT ?= 8090
SHARED_DATA ?= ../shared/data
export COVERTYPE_CSV ?= $(abspath $(SHARED_DATA))/covertype.csv

AIRFLOW_LOCAL := AIRFLOW_HOME=$(abspath .local/airflow) AIRFLOW__CORE__DAGS_FOLDER=$(abspath airflow/dags) \
	AIRFLOW__CORE__LOAD_EXAMPLES=false PATH=$(abspath $(BIN)):$$PATH

.PHONY: install test lint format data-api dag-run bench-quality bench-inference e2e screenshots lock clean clean-data

# A venv that failed half-way (Debian without python3.11-venv leaves bin/python but no pip) is
# removed, so the next run starts over instead of taking it as done.
$(BIN)/python:
	@echo "$(PYTHON) -m venv $(VENV)"
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "$(PYTHON) -m venv failed: on Debian, apt-get install python3.11-venv" >&2; exit 1; }

$(INSTALLED): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

install: $(INSTALLED) ## the dev environment (all pinned); the targets below run it when needed

lock: $(BIN)/python ## re-resolve the direct pins and rewrite the full lock
	$(BIN)/pip install --quiet -e ".[dev]"
	{ echo "# Full lock of the dev environment (make lock); every image and make install use it with -c."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^-e '; } > $(CONSTRAINTS)

test: $(INSTALLED) ## unit and integration tests (no Docker needed)
	$(BIN)/ruff check .
	$(BIN)/pytest -m "not e2e"

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

data-api: $(INSTALLED) ## run the data API replica on the host
	DATA_API_STATE_DIR=$${DATA_API_STATE_DIR:-.local/data-api} \
	  $(BIN)/uvicorn data_api.app:create_app --factory --host 127.0.0.1 --port $(DATA_API_PORT)

dag-run: $(INSTALLED) ## one run of the DAG in-process against the host's data API (make data-api) and .local/ stores
	$(AIRFLOW_LOCAL) $(BIN)/airflow db migrate
	$(AIRFLOW_LOCAL) $(BIN)/airflow dags test covertype_pipeline

bench-quality: $(INSTALLED)
	$(BIN)/python bench/quality.py

bench-inference: $(INSTALLED)
	$(BIN)/python bench/inference.py

e2e: $(INSTALLED) ## build and start the whole stack, check it through its public interfaces, tear it down
	$(BIN)/pytest -m e2e tests/e2e -s

screenshots: $(INSTALLED)
	$(BIN)/python -m tests.ui.screenshots

clean: ## the venv and tool caches (not your local data: see clean-data)
	rm -rf $(VENV) .pytest_cache .ruff_cache

clean-data: ## the local stores of make dag-run / make data-api under .local/ (Airflow DB, data DB, MLflow store)
	rm -rf .local
