# Two commands for a fresh clone: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
# `make bundle` then writes the int8 edge bundle of the demo's model (export/demo-int8/); `make bench` benchmarks it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where the real datasets live. Unset and absent, the loaders download the published archives (sha256-checked).
ifneq ($(wildcard ../shared/datasets),)
export CROSSL_EDGE_DATA ?= $(abspath ../shared/datasets)
endif

.PHONY: demo test bundle bench bench-quick pi-check setup clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch==2.13.0 named in the same command as executorch and litert-torch: see DESIGN.md
	$(PY) -m pip install torch==2.13.0 -e '.[train,export,edge,signing,bridge,bench,dev,minirocket,lsl]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m crossl_edge.demo $(ARGS)

test: setup
	$(PY) -m pytest -q

bundle: setup
	$(PY) -m crossl_edge.export --int8

# Latency, size, memory, floor, bridge and accuracy plots on this machine: benchmarks/results/<machine-name>/.
# Needs the int8 and fp32 bundles (make bundle; python -m crossl_edge.export).
bench: setup
	$(PY) -m benchmarks

bench-quick: setup
	$(PY) -m benchmarks --quick

# The Pi path without a Pi (root; builds an arm64 Debian root under qemu-user): deploy/pi/emulated_check.sh
pi-check: setup
	PYTHON=$(PY) deploy/pi/emulated_check.sh export/demo-int8

clean:
	rm -rf $(VENV) runs .pytest_cache
