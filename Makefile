# closure-risk: simulate, model and explain never-overdue account closures.
# `make help` lists the targets. Hydra overrides go through ARGS, e.g.
#   make run ARGS="data.n_borrowers=50000 model.num_leaves=63"

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
RUNS ?=
PORT ?= 5000
TRIALS ?= 20
SERVER_PORT ?= 5050
PG_PORT ?= 5433
SERVE_PORT ?= 5001
# MLflow's own processes (ui, models serve, server) send no usage telemetry either: the
# project reaches no network at run time (the package turns it off for its own processes)
export MLFLOW_DISABLE_TELEMETRY ?= true
# the output root whose MLflow store `make ui` and `make serve` open (paths.root of the runs)
ROOT ?= $(CURDIR)
# DATASET=<name>: serve, serve-example, score and report act on the table run in
# runs/<name>/ (its model, registry and report) instead of the simulator's
DATASET ?=
GERMAN_CSV := $(CURDIR)/data/external/german_credit/german_credit.csv
DATA_ARGS_german := data=table data.name=german data.path=$(GERMAN_CSV) data.target=creditability data.positive=bad
DATASET_ARGS := $(if $(DATASET),$(or $(DATA_ARGS_$(DATASET)),data=table data.name=$(DATASET)),)
HOME_DIR := $(if $(DATASET),$(CURDIR)/runs/$(DATASET),$(ROOT))

.DEFAULT_GOAL := help
.PHONY: help venv run data features train explain survival report score policy serve serve-example compare ui mlflow-server test test-fast lint clean bench learning-curve scale sweep german

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST) \
		| sed -e 's/$$(SERVE_PORT)/$(SERVE_PORT)/g' -e 's/$$(SERVER_PORT)/$(SERVER_PORT)/g' -e 's/$$(PORT)/$(PORT)/g' -e 's/$$(TRIALS)/$(TRIALS)/g' 

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found " + sys.version.split()[0] + ")")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip==26.3"
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create or refresh the virtual environment from the lock file

run: $(STAMP) ## Run the whole pipeline (generate, features, train, survival, explain, policy, report), print the summary
	$(BIN)/python -m pipeline run $(ARGS)

data: $(STAMP) ## Simulate the borrower world into data/raw (and ground truth into data/truth)
	$(BIN)/python -m pipeline generate $(ARGS)

features: $(STAMP) ## Build point-in-time features into data/processed
	$(BIN)/python -m pipeline features $(ARGS)

train: $(STAMP) ## Train and evaluate the LightGBM closure-risk model into models/
	$(BIN)/python -m pipeline train $(ARGS)

explain: $(STAMP) ## SHAP values, reason codes and plots for out-of-time rows
	$(BIN)/python -m pipeline explain $(ARGS)

survival: $(STAMP) ## Competing-risks closure curves by horizon and cause, and the explanation leaderboard
	$(BIN)/python -m pipeline survival $(ARGS)

report: $(STAMP) ## Rebuild the self-contained HTML model report from the outputs (models/report.html; DATASET=name: runs/name/models)
	@echo "report: the model in $(HOME_DIR)/models"
	$(BIN)/python -m pipeline report $(DATASET_ARGS) $(ARGS)

score: $(STAMP) ## Score new rows with the champion (ARGS="score.input=PATH score.output=PATH"; DATASET=name)
	@echo "score: the champion of $(HOME_DIR)"
	$(BIN)/python -m pipeline score $(DATASET_ARGS) $(ARGS)

policy: $(STAMP) ## Compare closing with the tiered strategy on simulated outcomes (registry champion)
	$(BIN)/python -m pipeline policy $(ARGS)

serve-example: $(STAMP) ## Print a valid POST /invocations request for the served model, and its curl line (DATASET=name)
	$(BIN)/python -m pipeline.tools.serve_example --port $(SERVE_PORT) $(DATASET_ARGS) $(ARGS)

# a table model registers under its dataset's name in runs/<name>/mlflow.db
SERVE_MODEL ?= $(if $(DATASET),$(DATASET)-serving,closure-risk-lgbm-serving)
serve: $(STAMP) ## Serve the champion pyfunc on 127.0.0.1:$(SERVE_PORT) (POST /invocations; DATASET=name, SERVE_MODEL=name)
	@echo "serve: models:/$(SERVE_MODEL)@champion from $(HOME_DIR)/mlflow.db"
	PATH="$(CURDIR)/$(BIN):$$PATH" MLFLOW_TRACKING_URI="sqlite:///$(HOME_DIR)/mlflow.db" $(BIN)/mlflow models serve -m "models:/$(SERVE_MODEL)@champion" --env-manager local -h 127.0.0.1 -p $(SERVE_PORT)

sweep: $(STAMP) ## Optuna search of LightGBM parameters on validation AUC, 2 trials at a time (TRIALS=20)
	$(BIN)/python -m pipeline generate $(ARGS)
	$(BIN)/python -m pipeline features $(ARGS)
	$(BIN)/python -m pipeline train --multirun +sweep=lightgbm hydra.sweeper.n_trials=$(TRIALS) $(ARGS)

german: $(STAMP) ## Worked bring-your-own-table example: German credit (5x2 CV) into runs/german/
	@test -f "$(GERMAN_CSV)" || { echo "$(GERMAN_CSV): not found (it ships with the repository)" >&2; exit 2; }
	$(BIN)/python -m pipeline run $(DATA_ARGS_german) $(ARGS)

ui: $(STAMP) ## Serve the MLflow UI on 127.0.0.1:$(PORT) for the store under ROOT (default: here; DATASET=name: runs/name/)
	@echo "MLflow UI for $(HOME_DIR) (Ctrl-C stops it); its root page is MLflow's GenAI welcome page, the runs are elsewhere:"
	@$(BIN)/python -m pipeline.tools.ui_url --root "$(HOME_DIR)" --port $(PORT)
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(HOME_DIR)/mlflow.db" --default-artifact-root "$(HOME_DIR)/mlartifacts" --host 127.0.0.1 --port $(PORT)

mlflow-server: $(STAMP) ## MLflow server on 127.0.0.1:$(SERVER_PORT), PostgreSQL store in outputs/ (use tracking=server)
	@bash .ci/install-postgres --check
	$(BIN)/python -m pipeline.tools.server --port $(SERVER_PORT) --pg-port $(PG_PORT)

# the suite runs in TEST_WORKERS processes (pytest-xdist), each test file kept in one
TEST_WORKERS ?= 2
test: $(STAMP) ## Run the whole test suite (slow tests included), TEST_WORKERS files at a time
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP) ## Run the tests without the slow ones
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: $(STAMP) ## Ruff (lint and format check), mypy, and the layering contract of pipeline/
	$(BIN)/ruff check pipeline tests
	$(BIN)/ruff format --check pipeline tests
	$(BIN)/mypy pipeline
	$(BIN)/python -m pipeline.tools.layers pipeline
	$(BIN)/python -m pipeline.tools.dictionary --check

compare: $(STAMP) ## Two or more MLflow runs side by side: parameters that differ, headline figures (RUNS="<id> <id>")
	@test -n "$(RUNS)" || { echo 'usage: make compare RUNS="<run id> <run id>"' >&2; exit 2; }
	$(BIN)/python -m pipeline.tools.compare $(RUNS)

learning-curve: $(STAMP) ## The model trained on 0.25x-4x the borrowers, scored on common rows (ARGS="data.n_borrowers=...")
	$(BIN)/python -m pipeline.tools.learning_curve $(ARGS)

scale: $(STAMP) ## Each stage's cost at several sizes, fitted and extrapolated (SIZES=100000,300000; docs/scale.md)
	$(BIN)/python -m pipeline.tools.scale measure --sizes $(or $(SIZES),100000,300000) --root $(or $(ROOT),runs/scale) --runs $(or $(RUNS),docs/scale_runs.json) $(ARGS)
	$(BIN)/python -m pipeline.tools.scale fit --runs $(or $(RUNS),docs/scale_runs.json)

bench: $(STAMP) ## Benchmark each stage against a reference, side by side (ARGS="bench.n_borrowers=...")
	$(BIN)/python -m pipeline.tools.bench $(ARGS)

clean: ## Remove generated data, models, Hydra outputs and the local MLflow store
	rm -rf data/raw data/truth data/processed outputs mlflow.db mlartifacts runs
	rm -f scores*.parquet scores*.csv
	find models -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
