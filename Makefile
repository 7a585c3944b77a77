# p3d: thin doors onto the `p3d` CLI and the trainer. Every target reads a workflow file.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCENES ?= toy
WORKFLOW ?= workflows/$(SCENES).yaml
STAGE ?= 4
# DeepSpeed's CPU accelerator, rendezvous variables and extension cache are set by trainer/env.py.
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup test test-fast demo toy features cluster train lint clean

$(BIN)/p3d: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/p3d  ## venv + editable install

test: $(BIN)/p3d  ## the whole test suite
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/p3d  ## without the slow end-to-end and multi-process tests
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(BIN)/p3d  ## the whole chain on the toy world, report in runs/toy/report.md
	$(BIN)/p3d demo --workflow workflows/toy.yaml

toy: $(BIN)/p3d  ## build the toy world only
	$(BIN)/p3d toy --workflow workflows/toy.yaml

features: $(BIN)/p3d  ## make features SCENES=toy|scannet (or WORKFLOW=path)
	$(BIN)/p3d features --workflow $(WORKFLOW)

cluster: $(BIN)/p3d
	$(BIN)/p3d cluster --workflow $(WORKFLOW)

train: $(BIN)/p3d  ## make train STAGE=1..4
	$(BIN)/python trainer/run.py --stage $(STAGE) --workflow $(WORKFLOW)

lint: $(BIN)/p3d
	$(BIN)/pip install -q ruff
	$(BIN)/python -m ruff check --select F pipeline trainer schemas tests benchmarks

clean:
	rm -rf data runs .pytest_cache
