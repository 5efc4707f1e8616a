"""configure()'s batch defaults: batches of 1,024 from a queue of 8,192, and a default batch that
shrinks to a smaller configured queue instead of failing (see docs/benchmarks.md for why)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from kilostar_otel import configure


class BatchSizes(SpanExporter):
    """Records the size of every export call."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.first = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.sizes.append(len(spans))
        self.first.set()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def _first_batch(spans: int, **settings: int) -> tuple[int, list[int]]:
    exporter = BatchSizes()
    telemetry = configure(
        set_global=False, exporter=exporter, schedule_delay_millis=60_000, **settings
    )
    tracer = telemetry.get_tracer("batches")
    for n in range(spans):
        tracer.start_span(f"s{n}").end()
    assert exporter.first.wait(10), "the batch size was reached, so the worker must export"
    first = exporter.sizes[0]
    assert telemetry.force_flush(10_000)
    telemetry.shutdown()
    # Every span was exported or counted as dropped (a drop is never silent).
    assert sum(exporter.sizes) <= spans <= sum(exporter.sizes) + telemetry.dropped_spans
    return first, exporter.sizes


def test_default_batches_hold_1024_spans() -> None:
    first, sizes = _first_batch(1_100)
    assert first == 1_024
    assert sum(sizes) == 1_100  # the queue of 8,192 had room for all


def test_a_smaller_queue_shrinks_the_default_batch() -> None:
    first, _ = _first_batch(300, max_queue_size=256)
    assert first == 256


def test_a_smaller_queue_from_the_environment_shrinks_the_default_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "300")
    first, _ = _first_batch(300)
    assert first == 300


def test_an_explicit_batch_larger_than_the_queue_is_still_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="must not exceed max_queue_size"):
        configure(set_global=False, exporter="none", max_queue_size=256, max_export_batch_size=512)
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")
    with pytest.raises(ValueError, match="must not exceed max_queue_size"):
        configure(set_global=False, exporter="none", max_queue_size=256)
