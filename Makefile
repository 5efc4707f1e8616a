# `make demo` runs the demo, `make test` the whole suite; both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: demo test lint docs bench setup clean backends jaeger w3c test-otel-floor test-matrix

# The C extension is built by the editable install: its source is a prerequisite too.
NATIVE_SOURCES := $(wildcard src/kilostar_otel/*.c)

$(STAMP): pyproject.toml $(NATIVE_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The demo needs only the cli extra (a .venv made by `make setup` already has it).
DEMO_STAMP := $(VENV)/.demo-stamp
$(DEMO_STAMP): pyproject.toml $(NATIVE_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(VENV)/bin/uv || $(PY) -m pip install --quiet --upgrade uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[cli]"
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
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

# The official W3C Trace Context suite (github.com/w3c/trace-context, a local copy: CI cannot
# fetch it) against tools/w3c/service.py, at SPEC_LEVEL=2 STRICT_LEVEL=2. Not part of `make test`.
w3c: $(STAMP)
	@test -n "$(W3C_TRACE_CONTEXT_DIR)" || { echo "usage: make w3c W3C_TRACE_CONTEXT_DIR=path/to/trace-context"; exit 2; }
	$(PY) -m tools.w3c.run "$(W3C_TRACE_CONTEXT_DIR)"

# --- The versions we claim, each tested (called by .ci/run after `make test`) -----------------
# The oldest OpenTelemetry release we support: pyproject.toml's floor, pinned by a constraints file.
OTEL_FLOOR_VENV ?= .venv-otel-floor
OTEL_FLOOR_STAMP := $(OTEL_FLOOR_VENV)/.installed-stamp
# The oldest and newest CPython we claim, from pyenv; their legs run the core, integration, OTLP
# and Ray tests in parallel with the OpenTelemetry floor run.
MATRIX_PYTHONS ?= 3.10 3.12 3.13
MATRIX_TESTS ?= tests/core tests/integrations tests/otlp
MATRIX_JOBS ?= 2
# Legs run side by side, but their Ray tests one at a time: two local Ray clusters starting
# together on a 2-core machine can miss Ray's fixed 30 s start-up deadline.
RAY_LOCK := $(CURDIR)/.ray-matrix.lock
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null)
pyenv_python = $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1))))

$(OTEL_FLOOR_STAMP): pyproject.toml $(NATIVE_SOURCES) constraints/otel-floor.txt $(STAMP)
	rm -rf $(OTEL_FLOOR_VENV)
	$(VENV)/bin/uv venv --quiet --python $(PY) $(OTEL_FLOOR_VENV)
	$(VENV)/bin/uv pip install --quiet --python $(OTEL_FLOOR_VENV)/bin/python \
		-c constraints/otel-floor.txt -e ".[dev]"
	touch $@

# The whole suite and `mypy --strict src` on the oldest OpenTelemetry release; skips nothing.
test-otel-floor: $(OTEL_FLOOR_STAMP)
	@$(OTEL_FLOOR_VENV)/bin/python -c "import importlib.metadata as m, sys; \
		print('otel floor:', sys.version.split()[0], 'opentelemetry-sdk', m.version('opentelemetry-sdk'))"
	$(OTEL_FLOOR_VENV)/bin/mypy --strict src
	$(OTEL_FLOOR_VENV)/bin/pytest -p no:cacheprovider --ignore=tests/ray
	flock $(RAY_LOCK) $(OTEL_FLOOR_VENV)/bin/pytest -p no:cacheprovider tests/ray

.venv-py%/.installed-stamp: pyproject.toml $(NATIVE_SOURCES) $(STAMP)
	@test -n "$(call pyenv_python,$*)" || { echo "no CPython $* under pyenv ($(PYENV_ROOT))"; exit 1; }
	rm -rf .venv-py$*
	$(VENV)/bin/uv venv --quiet --python $(call pyenv_python,$*) .venv-py$*
	$(VENV)/bin/uv pip install --quiet --python .venv-py$*/bin/python -e ".[dev]"
	touch $@

test-py%: .venv-py%/.installed-stamp
	@.venv-py$*/bin/python -c "import sys; print('python leg:', sys.executable, sys.version.split()[0])"
	.venv-py$*/bin/pytest -p no:cacheprovider $(MATRIX_TESTS)
	flock $(RAY_LOCK) .venv-py$*/bin/pytest -p no:cacheprovider tests/ray

# The OpenTelemetry floor and every Python leg, MATRIX_JOBS at a time; each leg's output is
# printed whole when it ends, with its wall time; fails if any leg fails.
test-matrix: $(STAMP)
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory --output-sync=target -j$(MATRIX_JOBS) -k \
		$(foreach leg,test-otel-floor $(addprefix test-py,$(MATRIX_PYTHONS)),timed-$(leg)); \
	status=$$?; echo "test-matrix: $$(( $$(date +%s) - start )) s wall, status $$status"; exit $$status

timed-%:
	@start=$$(date +%s); $(MAKE) --no-print-directory $*; status=$$?; \
	echo "$*: $$(( $$(date +%s) - start )) s, status $$status"; exit $$status

clean:
	rm -rf $(VENV) $(OTEL_FLOOR_VENV) .venv-py* .ray-matrix.lock .pytest_cache .mypy_cache .ruff_cache site
