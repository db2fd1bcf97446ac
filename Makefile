# Single entry point. `make run` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DAG_ID := fashion_mnist_transfer_learning

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

.PHONY: install data run test airflow constraints clean-airflow

install: $(VENV)/.installed
$(VENV)/.installed: requirements.txt constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	@touch $@

# Make sure the real Fashion-MNIST IDX files can be found (installs the Debian package as root).
data: install
	@bash scripts/ensure_data.sh

$(AIRFLOW_HOME)/.migrated: $(VENV)/.installed
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)
	@touch $@

run: data $(AIRFLOW_HOME)/.migrated
	$(BIN)/airflow dags test $(DAG_ID) -c '$(RUN_CONF)'
	@$(BIN)/python scripts/latest_report.py

test: data
	$(BIN)/python -m pytest $(PYTEST_ARGS)

airflow: data $(AIRFLOW_HOME)/.migrated
	@echo "Airflow UI: http://localhost:8080  (user: admin, password in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated)"
	$(BIN)/airflow standalone

constraints: install
	$(BIN)/pip freeze --exclude-editable > constraints.txt

clean-airflow:
	rm -rf $(AIRFLOW_HOME)

# Benchmark: the pipeline against the seed's plain Keras recipe (method: benchmarks/README.md).
# Writes benchmarks/results/<timestamp>.json. BENCH_QUICK=1: tiny synthetic data, a smoke run.
.PHONY: benchmark
benchmark: data
	$(BIN)/python benchmarks/run_benchmark.py $(if $(BENCH_QUICK),--quick) $(BENCH_ARGS)
