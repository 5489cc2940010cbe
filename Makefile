# `make test` and `make demo` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

HOROVOD_STAMP := $(VENV)/.horovod

.PHONY: venv horovod gpu test test-fast test-shuffled mutation-check demo clean

# The pinned requirements and the package itself, editable (`maskplus-*` commands; no sys.path edits).
$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(None if sys.version_info >= (3, 11) else "MaskPlus needs Python >= 3.11; $(PYTHON) is " + sys.version.split()[0] + ": make PYTHON=python3.11 ...")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

venv: $(STAMP)

# Horovod is built from source against the pinned TensorFlow (a few minutes on 2 cores).
$(HOROVOD_STAMP): $(STAMP) scripts/install_horovod.sh
	PYTHON=$(PY) bash scripts/install_horovod.sh
	touch $(HOROVOD_STAMP)

horovod: $(HOROVOD_STAMP)

# The GPU stack on top of the CPU install: TensorFlow's CUDA extra and Horovod rebuilt with NCCL
# (needs an NVIDIA driver for CUDA 12 and, for Horovod, nvcc: docs/INSTALL.md).
gpu: $(STAMP)
	PYTHON=$(PY) bash scripts/install_gpu.sh
	touch $(HOROVOD_STAMP)

test: $(STAMP) $(HOROVOD_STAMP)
	MASKPLUS_REQUIRE_HOROVOD=1 $(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

# `make test` in a shuffled order, to show a test that passes only after (or before) another: the
# tests of all modules shuffled together (each process then runs its files' tests in that order)
# from SEED, printed first; `make test-shuffled SEED=123` replays an order.
ifndef SEED
SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
test-shuffled: $(STAMP) $(HOROVOD_STAMP)
	@echo "test order shuffled with SEED=$(SEED) (replay: make test-shuffled SEED=$(SEED))"
	MASKPLUS_REQUIRE_HOROVOD=1 $(PY) -m pytest -q -n 2 --dist loadfile --durations=15 \
		--random-order-bucket=global --random-order-seed=$(SEED) tests

# The edit-test loop: every test but those marked slow (over ~10 s, mostly tiny models trained
# for a few steps) or cli (train.py, predict.py and the scripts run as command lines).
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=5 -m "not slow and not cli" tests

# Not part of `test` (it takes a while): plants each bug of scripts/mutants.txt in a scratch copy
# and runs the tests that must catch it; fails unless every one is caught.
mutation-check: $(STAMP)
	$(PY) scripts/mutation_check.py $(MUTATION_ARGS)

demo: $(STAMP)
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV)
