# apt-daq: every target is idempotent and installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEV_STAMP := $(VENV)/.dev-installed-stamp
# the numba cache: .numba-cache/src-<digest of the sources>, set by apt-daq itself
# (apt_daq.shipped.default_numba_cache); a NUMBA_CACHE_DIR you export is used as is

.PHONY: install install-dev run test bench lint hil clean

# the runtime set only (what `make run` needs); the test and peer tools come with install-dev
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	$(VENV)/bin/apt-daq warmup   # compile the numba kernels now, not during the first run
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

run: install
	$(VENV)/bin/apt-daq run configs/runs/nmc811-cr-5pj.yaml -o runs/nmc811-cr-5pj.h5 --overwrite
	$(VENV)/bin/apt-daq analyze runs/nmc811-cr-5pj.h5
	$(VENV)/bin/apt-daq plot runs/nmc811-cr-5pj.h5 -o runs/nmc811-cr-5pj-plots --overwrite

# two workers (the CI machine has 2 cores), each taking whole test files, so a module's
# fixtures are built once: ~15 min instead of ~21
test: install-dev
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

bench: install
	$(VENV)/bin/apt-daq bench

lint: install-dev
	$(VENV)/bin/ruff check .

# Hardware in the loop: the emulator in the background, a HIL run through the real drivers
# (SCPI laser, serial-line HV on a pty, DLD record stream), then the emulator stopped.
HIL_PORTS := runs/hil-ports.json
hil: install
	mkdir -p runs && rm -f $(HIL_PORTS)
	$(VENV)/bin/apt-daq emulate configs/runs/hil-nmc811-cr.yaml --speed 100 \
	  --ports-file $(HIL_PORTS) > runs/hil-emulator.log 2>&1 & EMU=$$!; \
	trap 'kill $$EMU 2>/dev/null; wait $$EMU' EXIT; \
	for i in $$(seq 600); do test -s $(HIL_PORTS) && break; \
	  kill -0 $$EMU 2>/dev/null || { cat runs/hil-emulator.log; exit 1; }; sleep 0.2; done; \
	$(VENV)/bin/apt-daq run configs/runs/hil-nmc811-cr.yaml --ports-file $(HIL_PORTS) \
	  -o runs/hil-nmc811-cr.h5 --overwrite

clean:
	rm -rf $(VENV) .numba-cache runs
