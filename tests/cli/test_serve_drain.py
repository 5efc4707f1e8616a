"""``kilostar-otel serve --out`` on SIGTERM or Ctrl-C writes every span it acknowledged."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .test_serve import LISTENING, start_serve

BATCH = 256
SENDERS = 4


def _batch() -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("drain")
    for n in range(BATCH):
        tracer.start_span(f"s{n}").end()
    return list(memory.get_finished_spans())


def _spans_in(path: Path) -> int:
    count = 0
    for line in path.read_text().splitlines():
        for resource in json.loads(line).get("resourceSpans", []):
            for scope in resource.get("scopeSpans", []):
                count += len(scope.get("spans", []))
    return count


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_every_acknowledged_span_is_written(tmp_path: Path, protocol: str, stop: int) -> None:
    out = tmp_path / "served.jsonl"
    process = start_serve(
        "--grpc-port", "0", "--http-port", "0", "--out", str(out), "--no-color"
    )  # fmt: skip
    assert process.stderr is not None and process.stdout is not None
    match = LISTENING.search(process.stderr.readline())
    assert match
    threading.Thread(target=process.stdout.read, daemon=True).start()  # the trees
    threading.Thread(target=process.stderr.read, daemon=True).start()
    batch = _batch()
    acknowledged = [0] * SENDERS
    enough = threading.Event()

    def send(slot: int) -> None:
        exporter: SpanExporter = (
            GrpcSpanExporter(endpoint=match.group(1), insecure=True, timeout=2)
            if protocol == "grpc"
            else HttpSpanExporter(endpoint=match.group(2) + "/v1/traces", timeout=2)
        )
        for _ in range(200):  # until the server stops answering
            if exporter.export(batch) is not SpanExportResult.SUCCESS:
                break
            acknowledged[slot] += BATCH
            if sum(acknowledged) >= 24 * BATCH:
                enough.set()
        enough.set()
        exporter.shutdown()

    senders = [threading.Thread(target=send, args=(n,)) for n in range(SENDERS)]
    for sender in senders:
        sender.start()
    assert enough.wait(60)
    process.send_signal(stop)  # while the senders are still sending
    assert process.wait(timeout=60) == 0
    for sender in senders:
        sender.join(60)
    assert sum(acknowledged) >= 24 * BATCH
    assert _spans_in(out) >= sum(acknowledged)  # nothing acknowledged is lost
