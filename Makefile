# apt-daq: every target is idempotent and installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export NUMBA_CACHE_DIR := $(CURDIR)/.numba-cache

.PHONY: install run test bench lint hil clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/apt-daq run configs/runs/nmc811-cr-5pj.yaml -o runs/nmc811-cr-5pj.h5 --overwrite
	$(VENV)/bin/apt-daq analyze runs/nmc811-cr-5pj.h5
	$(VENV)/bin/apt-daq plot runs/nmc811-cr-5pj.h5 -o runs/nmc811-cr-5pj-plots

test: install
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(VENV)/bin/apt-daq bench

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .numba-cache runs
