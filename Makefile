# make demo  - create .venv if missing, train on the built-in demo data, then explain the result
# make test  - create .venv if missing, run the whole test suite (what CI runs)
# make test-fast - the suite without the tests marked slow (end to end, DDP, kill/resume, browser), on every core
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: on the catdog dev machines these builds are on local disk.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-fast install clean-venv

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The demo explains with align=cell: its 4x4 maps put objects in border cells, where the measured
# receptive-field centres (the default, better on photos) sit inward of the object (bench/RESULTS.md).
demo: install
	$(VENV)/bin/catdog train
	$(VENV)/bin/catdog explain ckpt=latest align=cell

test: install
	$(PY) -m pytest

# One process per core (pytest-xdist), one torch thread each: the fast tests are small models and Python,
# which two threads per process only make wait for each other.
test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow" -n auto

clean-venv:
	rm -rf $(VENV)
