# Set-up and entry points. `make run` and `make test` work on a fresh machine with
# only Python 3.11+ and make: each creates .venv and installs the project into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The server with the embedded defaults of SPEC.md: LSM engine, data in ./data,
# front on tcp://127.0.0.1:7379 (Ctrl-C stops it cleanly). `demo` runs the embedded demo.
run: $(STAMP)
	$(BIN)/concordkv serve --data-dir ./data --endpoint tcp://127.0.0.1:7379 --engine lsm

demo: $(STAMP)
	$(BIN)/concordkv demo ./demo-data

test: $(STAMP)
	$(BIN)/python -m pytest -q --timeout=900

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --timeout=300

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python profiles/bench_engine.py
	$(BIN)/python profiles/engine_matrix.py
	$(BIN)/python profiles/bench_server.py

clean:
	rm -rf $(VENV) demo-data .pytest_cache .hypothesis
