# One command each: `make demo` sets up (runtime dependencies only) and serves a demo dataset;
# `make test` sets up with the development tools and runs every check (ruff, mypy, pytest).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ./data/demo
PORT ?= 8080

.PHONY: setup demo serve test test-spark lint typecheck bench fuzz console-assets

# The KQL execution tests run again on Spark (pytest --engine spark, one local[2] session):
# in `make test` a representative part, to keep Spark's share of the run near 90 s; all of them
# with `make test-spark`.
SPARK_TESTS := tests/test_spark_engine.py tests/kql/test_dialects.py

# What serving needs (runtime dependencies only): `make demo` and `make serve` install no more.
$(BIN)/quarry: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(BIN)/quarry
	@echo "quarry is installed in $(abspath $(BIN)); to run it from anywhere:"
	@echo "    export PATH=\"$(abspath $(BIN)):\$$PATH\""

# Development and test tools (pytest, playwright, ruff, mypy...) and the agent, for `make test`.
$(VENV)/.dev: $(BIN)/quarry pyproject.toml agent/pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e ./agent
	touch $(VENV)/.dev

setup: $(VENV)/.dev

demo: $(BIN)/quarry
	$(BIN)/quarry demo --data-dir $(DATA) --port $(PORT)

serve: $(BIN)/quarry
	$(BIN)/quarry serve --data-dir $(DATA) --port $(PORT)

# The console's script and style sheet are committed built (server/web/static/), so serving and
# CI need no npm; after changing console/src, rebuild them with npm (from the lockfile) and esbuild.
console-assets:
	cd console && npm ci --no-audit --no-fund && npm run build

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/pytest -q
	$(BIN)/pytest -q --engine spark $(SPARK_TESTS)

test-spark: setup
	$(BIN)/pytest -q -rs --engine spark tests/kql tests/test_spark_engine.py

# The property-based fuzz tests (pytest -m fuzz) with a long budget: FUZZ_EXAMPLES examples per
# property instead of `make test`'s short, derandomized one.
FUZZ_EXAMPLES ?= 5000
fuzz: setup
	QUARRY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -m fuzz --hypothesis-show-statistics

# Each benchmark prints ratios against a baseline measured in the same run (the machine is shared).
bench: setup
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python -m benchmarks.storage
	$(BIN)/python -m benchmarks.corpus
	$(BIN)/python -m benchmarks.query_speed
	$(BIN)/python benchmarks/alert_latency.py
	$(BIN)/python benchmarks/detection_run.py
	$(BIN)/python benchmarks/notify_latency.py
	$(BIN)/python benchmarks/agent.py
