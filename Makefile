# `make demo` runs the demo, `make test` the whole suite; both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: demo test lint docs bench setup clean w3c

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kilostar-otel demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict src

test: lint
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(PY) -m benchmarks

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# The official W3C Trace Context suite (github.com/w3c/trace-context, a local copy: CI cannot
# fetch it) against tools/w3c/service.py, at SPEC_LEVEL=2 STRICT_LEVEL=2. Not part of `make test`.
w3c: $(STAMP)
	@test -n "$(W3C_TRACE_CONTEXT_DIR)" || { echo "usage: make w3c W3C_TRACE_CONTEXT_DIR=path/to/trace-context"; exit 2; }
	$(PY) -m tools.w3c.run "$(W3C_TRACE_CONTEXT_DIR)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
