# p3d: thin doors onto the `p3d` CLI and the trainer. Every target reads a workflow file:
# WORKFLOW=path, or SCENES=<name> for workflows/<name>.yaml, else the commands' own choice
# ($P3D_WORKFLOW, else the embedded workflows/toy.yaml). SET="cluster.proxies=700 features.num_frames=16"
# passes each space-separated item as `--set` (values must not contain spaces).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCENES ?=
WORKFLOW ?= $(if $(SCENES),workflows/$(SCENES).yaml)
SET ?=
STAGE ?= 4
WF = $(if $(WORKFLOW),--workflow $(WORKFLOW)) $(foreach s,$(SET),--set $(s))
# DeepSpeed's CPU accelerator, rendezvous variables and extension cache are set by trainer/env.py.
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup test test-fast demo smoke toy features cluster train bench-scale bench-gpu lint clean

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
	$(BIN)/p3d demo $(WF)

# The CI smoke run: the toy workflow shrunk to 4 scenes, 2 steps per stage, with every ablation of
# workflows/toy-ablations.yaml switched on (tests/test_demo.py).
SMOKE_SET := name=smoke out=data/smoke source.path=data/smoke/scenes source.toy.num_scenes=4 source.toy.frames=12 \
	source.toy.seed=3 features.num_frames=6 features.image_size=[112,140] cluster.proxies=32 \
	cluster.scenes_per_shard=2 train.out=runs/smoke/train \
	$(foreach i,0 1 2 3,train.stages.$(i).epochs=1 train.stages.$(i).max_steps=2) demo.runs=runs \
	demo.viz_scenes=1 demo.ablations.budgets=[16,32] demo.ablations.tasks=[object_name,grounding] \
	demo.ablations.epochs=1 demo.ablations.grouping_pair=true demo.ablations.oracle=true

smoke: $(BIN)/p3d  ## the CI smoke run: the whole chain on a 4-scene toy world -> runs/smoke/report.md
	$(BIN)/p3d demo $(if $(WORKFLOW),--workflow $(WORKFLOW)) $(foreach s,$(SMOKE_SET) $(SET),--set $(s))

toy: $(BIN)/p3d  ## build the toy world only
	$(BIN)/p3d toy $(WF)

features: $(BIN)/p3d  ## make features SCENES=toy|scannet (or WORKFLOW=path) [SET="section.key=value ..."]
	$(BIN)/p3d features $(WF)

cluster: $(BIN)/p3d  ## make cluster SET="cluster.proxies=700"
	$(BIN)/p3d cluster $(WF)

train: $(BIN)/p3d  ## make train STAGE=1..4
	$(BIN)/python trainer/run.py --stage $(STAGE) $(WF)

bench-scale: $(BIN)/p3d  ## the real architectures: meta-device counts, then reduced widths through features -> cluster -> train (CPU)
	$(BIN)/python benchmarks/scale.py --preset cpu

bench-gpu: $(BIN)/p3d  ## the GPU rehearsal at ScanNet size (CPU fallback at tiny sizes without a GPU); results in benchmarks/results/
	$(BIN)/python benchmarks/scale.py --rehearsal

lint: $(BIN)/p3d
	$(BIN)/pip install -q ruff
	$(BIN)/python -m ruff check --select F p3d pipeline trainer schemas tests benchmarks

clean:
	rm -rf data runs .pytest_cache
