# `make demo` runs the demo, `make test` the whole suite; both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: demo test lint docs bench setup clean backends jaeger

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

# Jaeger v2 and the OpenTelemetry Collector from pinned Go modules (tools/backends/), built once
# into a cache folder outside the work tree; the tests in tests/backends/ run them.
backends:
	tools/backends/build.sh

test: backends

# Both on 127.0.0.1 without Docker, until Ctrl-C (docs/jaeger.md).
jaeger: backends
	tools/backends/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
