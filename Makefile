# stageflow — the two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install bytecode demo test lint typecheck unit bench clean

# Test processes (pytest-xdist): most tests wait on real processes and servers, so two
# run well side by side even on two cores; `make test TEST_WORKERS=0` runs them in one.
TEST_WORKERS ?= 2

# `make install`: the environment only; fast when nothing changed.
install: $(STAMP) bytecode

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

# Byte-compile the sources, as `pip install .` does for a regular install (an
# editable one does not, and PYTHONDONTWRITEBYTECODE=1 would keep imports from
# writing the cache): `stageflow` then starts without compiling ~60 modules.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q src/stageflow

# `make demo`: the example ML pipeline, end to end, on embedded SQLite.
demo: $(STAMP) bytecode
	$(BIN)/stageflow run examples/ml_pipeline.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

# `make test`: lint, type-check, then the whole suite (PostgreSQL tests included).
test: $(STAMP) bytecode lint typecheck
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# `make unit`: the pure tests only (spec, graph, engine: no store, no process, a fake
# clock), for a quick check while developing.
unit: $(STAMP) bytecode
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests/unit/spec tests/unit/graph tests/unit/engine

bench: $(STAMP) bytecode
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .stageflow .mypy_cache .ruff_cache .pytest_cache
