# datavc developer commands. Every target creates the venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HEAVY_STAMP := $(VENV)/.installed-heavy

.PHONY: venv demo demo-repro test test-all lint bench bench-quick bench-peers bench-remote \
	bench-remote-quick bench-cluster clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip check
	$(BIN)/python -m compileall -q datavc
	touch $(STAMP)

venv: $(STAMP)

$(HEAVY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,heavy]'
	$(BIN)/python -m pip check
	touch $(HEAVY_STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# runs recorded, lineage drawn, a model rebuilt bit-identically, package drift shown
demo-repro: $(STAMP)
	$(BIN)/python scripts/demo_repro.py

# two worker processes (pytest-xdist): the suite fits the 10-minute budget with room
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

# everything: the stress runs and the tests marked heavy, whose extra (torch) it installs
test-all: $(HEAVY_STAMP)
	$(BIN)/python -m pytest -q -m ''

# The benchmark: docs/BENCHMARKS.md (+ .json). bench-quick: a 1-2 minute scaled-down run
# (docs/BENCHMARKS-quick.md). Peers (DVC, restic) are optional: make bench-peers installs them.
bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python scripts/bench.py --quick $(BENCH_ARGS)

bench-peers:
	PYTHON=$(PYTHON) PEERS=$(VENV)/peers bash scripts/bench_peers.sh

# datavc add --dask on a 2-worker LocalCluster against the local add: docs/BENCHMARKS-cluster.md
bench-cluster: $(STAMP)
	$(BIN)/python scripts/bench_cluster.py $(BENCH_ARGS)

# S3 at a distance (issue 16): datavc and DVC on an S3 server (SeaweedFS from bench-peers, else
# moto) behind a proxy delaying every byte, round trips of 0, 20 and 80 ms: datavc 3 times, DVC
# once (its 20,000 images take 20 minutes): docs/BENCHMARKS-remote.md (about 40 minutes);
# bench-remote-quick: 3 and 1 repetitions at a tenth of the size, 7 minutes (-quick.md).
bench-remote: $(STAMP)
	$(BIN)/python scripts/bench.py --only remote --reps 3 --peer-reps 1 $(BENCH_ARGS)

bench-remote-quick: $(STAMP)
	$(BIN)/python scripts/bench.py --only remote --quick $(BENCH_ARGS)

# ruff, mypy (strict) and the layer contract ([tool.importlinter] in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check datavc tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
