# Single entry point. `make run` and `make test` do all set-up on a fresh machine.
# Portable to macOS's GNU Make 3.81 and BSD tools: no .ONESHELL, !=, $(file), grouped targets or
# .SHELLFLAGS here, and the scripts avoid GNU-only flags (sed -i, readlink -f, grep -P).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
DAG_ID := fashion_mnist_transfer_learning
# Supported interpreters, preferred first (constraints.txt is resolved on 3.11; tests/install checks all).
# The first one on PATH creates the venv; PYTHON=/path/to/python3.x overrides; scripts/install.sh
# stops with one line saying what to install when there is none.
PYTHONS := python3.11 python3.12 python3.13
ifeq ($(origin PYTHON),undefined)
# Runs it, not just finds it: a pyenv shim exists for versions that are not selected and fails.
PYTHON := $(firstword $(foreach p,$(PYTHONS),$(shell $(p) -c 'import sys' >/dev/null 2>&1 && command -v $(p))))
endif
# A recipe that fails leaves no target behind: an install marker is only there after a full install.
.DELETE_ON_ERROR:

# Project-local Airflow on the embedded default: SQLite, no example DAGs, this repo's DAGs only.
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Optional JSON conf for `make run`, e.g. RUN_CONF='{"seeds": [42], "fractions": [0.7]}'
RUN_CONF ?= {}

.PHONY: install install-test data export-image-folder export-digits run test test-fast lint airflow constraints clean-airflow

# requirements.txt runs the pipeline; requirements-test.txt adds the test tools. Each marker is
# touched only after its install succeeded (scripts/install.sh also replaces a broken venv).
install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
$(VENV)/.installed: requirements.txt constraints.txt
	@rm -f $@
	@bash scripts/install.sh "$(PYTHON)" "$(VENV)" requirements.txt
	@touch $@
$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	@rm -f $@
	@bash scripts/install.sh "$(PYTHON)" "$(VENV)" requirements-test.txt
	@touch $@

# The real Fashion-MNIST IDX files (as root on Debian/Ubuntu: the dataset-fashion-mnist package).
data: install
	@PY=$(BIN)/python bash scripts/system_packages.sh data

$(AIRFLOW_HOME)/.migrated: $(VENV)/.installed
	@mkdir -p $(AIRFLOW_HOME)
	@echo "Preparing Airflow's database in $(AIRFLOW_HOME) (log: $(AIRFLOW_HOME)/db-migrate.log) ..."
	@$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)
	@touch $@

# One run through Airflow's scheduler (LocalExecutor; api-server, scheduler and dag-processor started at
# once, or a running healthy `make airflow` used) with a live summary; its task logs are in the UI
# afterwards (`make airflow`), as for any triggered run (why: scripts/make_run.py).
# VERBOSE=1 streams every component and task log line; the full log's path is printed either way.
# Real data in the other formats, for `make run` with data_dir (docs/experiment.md): Fashion-MNIST as
# an image folder, scikit-learn's bundled digits as NPZ. Both go under datasets/ (ignored by git).
export-image-folder: data
	@$(BIN)/python scripts/export_datasets.py images
export-digits: install
	@$(BIN)/python scripts/export_datasets.py digits

run: data $(AIRFLOW_HOME)/.migrated
	@RUN_CONF='$(RUN_CONF)' VERBOSE='$(VERBOSE)' $(BIN)/python scripts/make_run.py

# The tests also need a headless browser (as root on Debian/Ubuntu: the chromium package).
test: install-test
	@PY=$(BIN)/python bash scripts/system_packages.sh data browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The quick checks (tiers in pytest.ini): unit tests and DAG integrity; no training, no Airflow runs,
# no services, no browser, no real data.
test-fast: install-test
	$(BIN)/python -m pytest -m "unit and not (slow or realdata)" $(PYTEST_ARGS)

# ruff.toml says which rules and why.
lint: install-test
	$(BIN)/ruff check .

# The Airflow UI on the embedded default: `airflow standalone` (SQLite, SimpleAuthManager, LocalExecutor
# whose workers import TensorFlow once: deploy/preloading_executor.py), this repo's DAG only, unpaused,
# plus the reports plugin. AIRFLOW_PORT=8081 picks another port; AIRFLOW_BIND=0.0.0.0 serves other machines
# (SimpleAuthManager is for development: local by default).
# standalone starts its components as `airflow ...` from PATH: the venv's bin goes first. Tasks report
# to the api-server's execution API, so its URL follows the port. The wrapper makes Ctrl-C stop it cleanly.
AIRFLOW_PORT ?= 8080
AIRFLOW_BIND ?= 127.0.0.1
# LocalExecutor worker processes, each one task at a time (Airflow's default 32): the usable cores, at
# least 2, as make run uses (deploy/processes.py:local_workers). Each training task already uses every
# core, and each worker holds its own preloaded TensorFlow (about 300 MB). MIN_HEARTBEAT_INTERVAL=1: a
# finished task frees its worker within 1 s, not 5 (scripts/make_run.py's component_env says why).
AIRFLOW_PARALLELISM ?= $(shell n=$$(nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2); echo $$(( n < 2 ? 2 : n )))
airflow: data $(AIRFLOW_HOME)/.migrated
	@echo "Airflow UI: http://localhost:$(AIRFLOW_PORT)  (api-server; Ctrl-C stops every component)"
	@echo "Login:      user admin, generated password in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated"
	@echo "Reports:    http://localhost:$(AIRFLOW_PORT)/plugin/transfer-learning-reports  (menu Browse > Transfer learning reports)"
	@echo "Schedule:   nightly at 02:00 UTC (the first scheduled run is the next 02:00); use Trigger for a run now."
	PATH="$(CURDIR)/$(BIN):$$PATH" AIRFLOW__CORE__EXECUTOR=deploy.preloading_executor.LocalExecutor \
	  AIRFLOW__CORE__PARALLELISM=$(AIRFLOW_PARALLELISM) AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1 \
	  AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$(AIRFLOW_HOME)/airflow.db \
	  AIRFLOW__API__HOST=$(AIRFLOW_BIND) AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	  AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$(AIRFLOW_PORT)/execution/ \
	  $(BIN)/python scripts/airflow_standalone.py

# Re-pin the resolved set from this install; marker-selected requirements keep their markers.
constraints: install-test
	$(BIN)/python scripts/freeze_constraints.py

clean-airflow:
	rm -rf $(AIRFLOW_HOME)

# Benchmark: the pipeline against the seed's plain Keras recipe (method: benchmarks/README.md).
# Writes benchmarks/results/<timestamp>.json. BENCH_QUICK=1: tiny synthetic data, a smoke run.
.PHONY: benchmark
benchmark: data
	$(BIN)/python benchmarks/run_benchmark.py $(if $(BENCH_QUICK),--quick) $(BENCH_ARGS)

# Power and validity of the pooled nightly evidence by simulation: plain numpy, no training, about
# 40 s on 2 cores. JSON on stdout, a table on stderr; exits 1 if a target is missed (docs/nightly.md).
.PHONY: evidence-power
evidence-power: install
	@$(BIN)/python benchmarks/evidence_power.py $(EVIDENCE_ARGS)

# Distributed mode with real components: api-server, scheduler, dag-processor, triggerer and celery
# worker(s) as separate processes on this machine's PostgreSQL (fresh database per run) and Redis.
# Addresses: TL_E2E_POSTGRES_URL / TL_E2E_REDIS_URL (default: local); TL_E2E_WORKERS (default 2) workers.
.PHONY: e2e-distributed docs-screenshots
e2e-distributed: install-test
	$(BIN)/python -m pytest -s -p no:cacheprovider tests/deploy/test_distributed.py

# Re-take docs/*.png (Graph view, trigger form, reports page) from a standalone Airflow with one tiny run.
docs-screenshots: install-test
	TL_DOCS_SCREENSHOTS=$(CURDIR)/docs $(BIN)/python -m pytest -s -p no:cacheprovider tests/deploy/test_ui_standalone.py

# docker-compose.yaml mounts ./data/fashion-mnist by default: fill it from the Debian package or the
# Keras cache (TL_DATASET_DIR in .env mounts another folder instead, e.g. the package's own).
.PHONY: compose-data e2e-compose
compose-data:
	@bash scripts/compose_data.sh data/fashion-mnist

# docker-compose.yaml run for real under Podman with locally built stand-in images: build, up with two
# workers, runs through the REST API, a killed worker, down -v (docs/deployment.md). TL_E2E_PORT picks
# the api-server's host port (default 18150).
e2e-compose: install-test
	$(BIN)/python scripts/e2e_compose.py

# Linux aarch64 run for real on a Linux host under qemu-user emulation, as root: `make install-test`,
# `make test-fast` and one tiny dag.test() run in a cached Debian arm64 root with its own venv
# (docs/platforms.md). Needs debootstrap, qemu-user-static and binfmt-support, and says so if one is
# missing; the first run builds the root (minutes). Compares its packages with this .venv's, if any.
.PHONY: test-arm64
test-arm64:
	@bash scripts/test_arm64.sh $(wildcard $(BIN)/python)
