"""``SpanBatch``, the export queue ``configure()`` builds: timing, fork safety, shutdown."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from kilostar_otel import configure


class Recording(SpanExporter):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.threads: set[str] = set()
        self.exported = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.names += [s.name for s in spans]
        self.threads.add(threading.current_thread().name)
        self.exported.set()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def test_a_part_batch_is_exported_after_the_schedule_delay_by_the_worker() -> None:
    exporter = Recording()
    telemetry = configure(set_global=False, exporter=exporter, schedule_delay_millis=50)
    tracer = telemetry.get_tracer("batch")
    for n in range(3):
        tracer.start_span(f"s{n}").end()
    assert exporter.exported.wait(10)  # no flush: the worker's timer
    telemetry.shutdown()
    assert exporter.names == ["s0", "s1", "s2"]
    assert exporter.threads == {"kilostar-otel-export"}


def test_spans_ended_after_shutdown_are_counted_not_exported() -> None:
    exporter = Recording()
    telemetry = configure(set_global=False, exporter=exporter)
    tracer = telemetry.get_tracer("batch")
    tracer.start_span("before").end()
    telemetry.shutdown()
    tracer.start_span("after").end()
    assert exporter.names == ["before"]
    assert telemetry.dropped_spans == 1


def test_a_forked_child_exports_with_its_own_worker() -> None:
    exporter = Recording()
    telemetry = configure(set_global=False, exporter=exporter, schedule_delay_millis=50)
    tracer = telemetry.get_tracer("batch")
    tracer.start_span("parent").end()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no flush, so only a running worker can export
        code = 1
        try:
            exporter.exported.clear()
            tracer.start_span("child").end()
            if exporter.exported.wait(10) and "child" in exporter.names:
                code = 0
            os.write(write, ",".join(exporter.names).encode())
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child_saw = os.read(read, 1000).decode()
    os.close(read)
    telemetry.shutdown()
    assert os.waitstatus_to_exitcode(status) == 0, child_saw
    assert "child" in child_saw.split(",")
    assert "child" not in exporter.names
