# One command to set up and run the demo, one to set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: on this project's machines 2.13.0 is a CPU build on disk; a bare
	# "torch" from another package's requirements could otherwise pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/moladapt demo

test: $(STAMP)
	MOLADAPT_DATA_DIR=$${MOLADAPT_DATA_DIR:-$(abspath ../shared/data)} $(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP)
	MOLADAPT_DATA_DIR=$${MOLADAPT_DATA_DIR:-$(abspath ../shared/data)} $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
