"""Shared fixtures: one real SDK TracerProvider for the whole session (OTel allows one global)."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

# Hooks re-raise their own errors in the project's tests (a hidden bug fails a test); set before
# kilostar_otel is imported, and inherited by every server and worker the tests start.
os.environ["KILOSTAR_OTEL_STRICT"] = "1"

import pytest
from hypothesis import HealthCheck, settings
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kilostar_otel import KiloStarSpanProcessor, _guard

# Property-based tests: a moderate run by default (CI), 100,000 examples with
# ``--hypothesis-profile=thorough``.
settings.register_profile(
    "default", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile("default")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The thorough profile lifts the per-test timeout: 100,000 examples take minutes a test."""
    if config.getoption("hypothesis_profile", None) == "thorough":
        for item in items:
            item.add_marker(pytest.mark.timeout(0))


_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(KiloStarSpanProcessor())
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_PROVIDER)


class Spans:
    """The spans finished during one test, with lookups that read like assertions."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self._exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self._exporter.get_finished_spans())

    def named(self, name: str) -> ReadableSpan:
        found = [s for s in self.all() if s.name == name]
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.all()]}"
        return found[0]

    def clear(self) -> None:
        self._exporter.clear()


@pytest.fixture
def provider() -> TracerProvider:
    """The session's global SDK provider (KiloStarSpanProcessor + in-memory exporter)."""
    return _PROVIDER


@pytest.fixture
def tracer(provider: TracerProvider) -> trace.Tracer:
    return provider.get_tracer("tests")


@pytest.fixture
def spans() -> Iterator[Spans]:
    """Finished spans of this test only."""
    _EXPORTER.clear()
    yield Spans(_EXPORTER)
    _EXPORTER.clear()


class Swallowed:
    """Errors the never-raise guard swallowed during one test, per hook."""

    def __init__(self) -> None:
        self._before = _guard.error_counts()

    def count(self, where: str) -> int:
        return _guard.error_counts().get(where, 0) - self._before.get(where, 0)


@pytest.fixture
def swallowed() -> Iterator[Swallowed]:
    """For tests that break a hook on purpose: strict mode off, and the swallowed errors counted."""
    previous = _guard.set_strict(False)
    try:
        yield Swallowed()
    finally:
        _guard.set_strict(previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI a skipped test is a failed test: every dependency and server must be installed."""
    report = yield
    if os.environ.get("CI") and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (install what it needs instead): {report.longrepr}"
    return report
