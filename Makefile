# fastdice: every target does its own set-up from nothing (venv, torch, build).
PYTHON_SYSTEM ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.14.1
# nvcc is at /usr/local/cuda on our machines; /usr/local/bin/nvcc is a wrapper
# that makes torch guess CUDA_HOME=/usr/local and fail to link.
export CUDA_HOME ?= $(shell [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda)
export MAX_JOBS ?= 2
# A cache per checkout: inductor keys its cache on the graph, not on our ops' fake
# kernels, so a cache left by an older build of fastdice can replay stale shapes.
export TORCHINDUCTOR_CACHE_DIR ?= $(CURDIR)/build/inductor-cache
PYTEST_ARGS ?=

.PHONY: all deps build test test-nnunet-e2e test-asan test-emulation emulation-mutants demo bench bench-metrics gpu-check \
  package test-sdist docs readme-table clean

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

# nnU-Net end to end on the CPU (tests/test_nnunet_e2e.py, not part of `make test`: about 2 minutes
# on 2 cores): a tiny generated 2-D dataset planned and preprocessed by nnU-Net, a few iterations of
# nnUNetTrainer and nnUNetTrainerFastDice from one seed, first losses equal, a final checkpoint.
test-nnunet-e2e: build
	OMP_NUM_THREADS=1 $(PY) -m pytest tests/test_nnunet_e2e.py -q --nnunet-e2e $(PYTEST_ARGS)

# The CUDA kernels executed on the emulated GPU (csrc/emulation, tests/test_emulation.py):
# part of `make test`; this target runs it alone. EMULATION_ARGS=--full for the whole matrix.
EMULATION_ARGS ?=
test-emulation: build
	$(PY) -m pytest tests/test_emulation.py -q $(EMULATION_ARGS)

# Each bug planted in tests/test_emulation.py's MUTANTS must make the emulation tier fail.
emulation-mutants: build
	$(PY) scripts/emulation_mutants.py

# The C++ (CPU) code built with AddressSanitizer + UBSan in a copy of the
# tree under build/asan, and the CPU test suite run against it.
ASAN_TESTS ?= tests/test_dice_loss.py tests/test_epilogue.py tests/test_validation.py tests/test_properties.py tests/test_ops.py tests/test_metrics.py \
  tests/test_combined.py tests/test_dice_family.py tests/test_compat_monai.py tests/test_compat_monai_combined.py tests/test_compat_smp.py \
  tests/test_mask.py tests/test_target_grad.py tests/test_probability_range.py
test-asan: deps
	rm -rf build/asan && mkdir -p build/asan
	cp -r setup.py pyproject.toml README.md csrc fastdice tests build/asan/
	rm -f build/asan/fastdice/_C*.so build/asan/fastdice/_build_config.py
	cd build/asan && FASTDICE_SANITIZE=1 FASTDICE_CUDA=0 ../../$(PY) setup.py -q build_ext --inplace
	cd build/asan && ASAN_OPTIONS=detect_leaks=0 \
	  LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ../../$(PY) -m pytest -q -p no:cacheprovider -k "not compile and not ddp" $(ASAN_TESTS)

# Train a small UNet with fastdice on generated, class-imbalanced data
# (about 1.5 minutes on 2 CPU cores); outputs in demo_out/.
demo: build
	PYTHONPATH=$(CURDIR) $(PY) examples/demo.py $(DEMO_ARGS)

bench: build
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

# Validation metric: fastdice.metrics vs torchmetrics vs MONAI (hard Dice, update + compute).
bench-metrics: build
	$(PY) -m benchmarks.bench_metrics $(BENCH_ARGS)

gpu-check:
	bash scripts/gpu_check.sh

# The sdist and the wheel, built the way a packager does (python -m build --no-isolation:
# the wheel is built from the sdist, against this venv's torch) and checked: twine's metadata
# check, check-wheel-contents, and tests/test_packaging.py's listing of both archives.
# FASTDICE_CUDA=0 for a CPU-only wheel (CI); unset, the wheel has CUDA kernels when it can.
DIST ?= dist
$(VENV)/.deps-package: requirements-package.txt $(VENV)/.deps
	$(PY) -m pip install -q -r requirements-package.txt
	touch $@

package: $(VENV)/.deps-package
	rm -rf $(DIST)
	$(PY) -m build --no-isolation --outdir $(DIST) .
	$(PY) -m twine check --strict $(DIST)/*
	$(PY) -m check_wheel_contents $(DIST)/*.whl
	FASTDICE_DIST_DIR=$(DIST) $(PY) -m pytest -q -p no:cacheprovider tests/test_packaging.py

# The sdist of `make package` installed into a fresh venv under build/ (pip install
# --no-build-isolation, CPU-only build) against torch $(SDIST_TORCH), then, from outside the
# checkout, the installed-package smoke test and the core test files against that copy.
SDIST_TORCH ?= $(TORCH_VERSION)
SDIST_VENV := build/sdist-torch-$(SDIST_TORCH)
SDIST_TESTS ?= tests/test_installed_package.py tests/test_ops.py tests/test_dice_loss.py tests/test_metrics.py
test-sdist:
	@ls $(DIST)/fastdice-*.tar.gz >/dev/null 2>&1 || { echo "make test-sdist: no $(DIST)/fastdice-*.tar.gz; run make package first"; exit 2; }
	rm -rf $(SDIST_VENV)
	$(PYTHON_SYSTEM) -m venv $(SDIST_VENV)
	$(SDIST_VENV)/bin/python -m pip install -q --upgrade pip setuptools wheel
	$(SDIST_VENV)/bin/python -m pip install -q torch==$(SDIST_TORCH) -r requirements-core-tests.txt
	PATH="$(CURDIR)/$(SDIST_VENV)/bin:$$PATH" FASTDICE_CUDA=0 \
	  $(SDIST_VENV)/bin/python -m pip install -q --no-build-isolation $(DIST)/fastdice-*.tar.gz
	cd $(SDIST_VENV) && FASTDICE_INSTALLED=1 FASTDICE_CUDA=0 TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/$(SDIST_VENV)/inductor-cache \
	  bin/python -m pytest -q -p no:cacheprovider $(addprefix $(CURDIR)/,$(SDIST_TESTS))

# The documentation site (docs/, Sphinx + furo + MyST), offline: every warning is an error,
# then no broken internal link in the HTML, then every code example of the pages and the README
# runs (tests/test_docs.py). Output: build/docs/html/index.html.
$(VENV)/.deps-docs: requirements-docs.txt $(VENV)/.deps
	$(PY) -m pip install -q -r requirements-docs.txt
	touch $@

# DOCS_EXAMPLES=0 skips the examples (CI: make test has run tests/test_docs.py already).
DOCS_EXAMPLES ?= 1
docs: build $(VENV)/.deps-docs
	rm -rf build/docs
	$(PY) -m sphinx -b html -W -n --keep-going -q docs build/docs/html
	$(PY) scripts/check_html_links.py build/docs/html
	$(if $(filter 0,$(DOCS_EXAMPLES)),,$(PY) -m pytest -q -p no:cacheprovider tests/test_docs.py)

# The README's benchmark table, rewritten from the newest committed run in benchmarks/results/.
readme-table:
	$(PY) scripts/readme_benchmark_table.py

# The GPU cost model, a model and not a measurement: every CUDA workload of `make bench` replayed on
# the profiling build of the emulated GPU (fastdice_dev/emulation.py, profile=True), its memory
# accesses counted as Nsight Compute counts them and a time predicted for an H100 SXM and an H200
# (fastdice_dev/gpu_model.py); writes benchmarks/results/gpu_model_<date>.md / .json and prints it.
# GPU_MODEL_ARGS="--only 3d_b2_c4_128^3 --max-blocks 96" for one workload or a larger sample.
GPU_MODEL_ARGS ?=
.PHONY: gpu-model
gpu-model: build
	$(PY) -m benchmarks.gpu_model $(GPU_MODEL_ARGS)

clean:
	rm -rf build dist fastdice/_C*.so fastdice/_build_config.py
