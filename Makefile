# fastdice: every target does its own set-up from nothing (venv, torch, build).
PYTHON_SYSTEM ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.14.1
# nvcc is at /usr/local/cuda on our machines; /usr/local/bin/nvcc is a wrapper
# that makes torch guess CUDA_HOME=/usr/local and fail to link.
export CUDA_HOME ?= $(shell [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda)
export MAX_JOBS ?= 2
PYTEST_ARGS ?=

.PHONY: all deps build test demo bench gpu-check clean

all: test

$(VENV)/.deps: requirements-test.txt
	$(PYTHON_SYSTEM) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

deps: $(VENV)/.deps

# CUDA kernels are built whenever torch is a CUDA build and nvcc is found
# (FASTDICE_CUDA=0 forces CPU-only, FASTDICE_CUDA=1 requires CUDA).
build: deps
	$(PY) setup.py -q build_ext --inplace

test: build
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

# Until the training demo lands, the demo is the quick benchmark.
demo: build
	$(PY) -m benchmarks.bench --quick $(DEMO_ARGS)

bench: build
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf build fastdice/_C*.so fastdice/_build_config.py
