"""The embedded OTLP receiver, fed by the real OTLP exporters over loopback gRPC and HTTP."""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from kilostar_otel.viewer import OtlpReceiver, ReceivedSpan


def _provider(exporter: SpanExporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "receiver-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture(params=["grpc", "http", "http-gzip"])
def exporter(request: pytest.FixtureRequest, receiver: OtlpReceiver) -> Iterator[SpanExporter]:
    if request.param == "grpc":
        exp: SpanExporter = GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)
    else:
        exp = HttpSpanExporter(
            endpoint=receiver.http_endpoint + "/v1/traces",
            compression=Compression.Gzip if request.param == "http-gzip" else None,
        )
    yield exp
    exp.shutdown()


def test_spans_arrive_decoded(receiver: OtlpReceiver, exporter: SpanExporter) -> None:
    provider = _provider(exporter)
    tracer = provider.get_tracer("receiver.scope")
    with tracer.start_as_current_span("other") as other:
        pass
    with tracer.start_as_current_span(
        "parent", kind=SpanKind.SERVER, links=[Link(other.get_span_context())]
    ) as parent:
        parent.set_attributes({"s": "x", "i": 7, "f": 1.5, "b": True, "arr": ["a", "b"]})
        parent.add_event("evt", {"k": "v"})
        with tracer.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()

    got = {s.name: s for s in receiver.wait_for_spans(3)}
    assert set(got) == {"other", "parent", "child"}
    p, c = got["parent"], got["child"]
    ctx = parent.get_span_context()
    assert p.trace_id == format(ctx.trace_id, "032x")
    assert p.span_id == format(ctx.span_id, "016x")
    assert p.parent_span_id == ""
    assert p.is_root
    assert c.parent_span_id == p.span_id
    assert not c.is_root
    assert c.trace_id == p.trace_id
    assert (p.kind, c.kind, got["other"].kind) == ("SERVER", "CLIENT", "INTERNAL")
    assert (p.status_code, c.status_code, c.status_message) == ("UNSET", "ERROR", "boom")
    assert p.attributes == {"s": "x", "i": 7, "f": 1.5, "b": True, "arr": ("a", "b")}
    assert p.events == (("evt", {"k": "v"}),)
    other_ctx = other.get_span_context()
    assert p.links == ((format(other_ctx.trace_id, "032x"), format(other_ctx.span_id, "016x")),)
    assert p.resource["service.name"] == "receiver-test"
    assert p.scope_name == "receiver.scope"
    assert 0 < p.start_time_unix_nano <= c.start_time_unix_nano <= p.end_time_unix_nano
    expected_transport = "grpc" if isinstance(exporter, GrpcSpanExporter) else "http"
    assert {s.transport for s in got.values()} == {expected_transport}
    assert len(receiver.requests) == 3  # SimpleSpanProcessor: one export per span
    assert all(isinstance(r, ExportTraceServiceRequest) for r in receiver.requests)


def test_clear_forgets_spans_and_requests(receiver: OtlpReceiver) -> None:
    provider = _provider(GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True))
    provider.get_tracer("t").start_span("one").end()
    receiver.wait_for_spans(1)
    receiver.clear()
    assert receiver.spans() == []
    assert receiver.requests == []
    provider.get_tracer("t").start_span("two").end()
    provider.shutdown()
    assert [s.name for s in receiver.wait_for_spans(1)] == ["two"]


def test_wait_for_spans_times_out_with_what_arrived(receiver: OtlpReceiver) -> None:
    provider = _provider(HttpSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces"))
    provider.get_tracer("t").start_span("only-one").end()
    provider.shutdown()
    with pytest.raises(TimeoutError, match=r"at least 2 span.*received 1.*only-one"):
        receiver.wait_for_spans(2, timeout=0.2)


def test_on_spans_callback_gets_each_batch_and_its_errors_are_contained() -> None:
    batches: list[list[ReceivedSpan]] = []
    calls = threading.Event()

    def on_spans(spans: list[ReceivedSpan]) -> None:
        batches.append(spans)
        calls.set()
        raise RuntimeError("a broken callback must not break the receiver")

    with OtlpReceiver(on_spans=on_spans) as rx:
        provider = _provider(GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True))
        provider.get_tracer("t").start_span("a").end()
        provider.get_tracer("t").start_span("b").end()
        provider.shutdown()
        assert [s.name for s in rx.wait_for_spans(2)] == ["a", "b"]
    assert [[s.name for s in batch] for batch in batches] == [["a"], ["b"]]


def _post(
    rx: OtlpReceiver, body: bytes, headers: dict[str, str], path: str = "/v1/traces"
) -> tuple[int, bytes]:
    url = urlsplit(rx.http_endpoint)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _request_bytes() -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    span.span_id = bytes.fromhex("b7ad6b7169203331")
    span.name = "raw"
    return request.SerializeToString()


PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.mark.parametrize(
    ("body", "headers", "path", "status"),
    [
        (_request_bytes(), PROTOBUF, "/v1/metrics", 404),
        (_request_bytes(), {"Content-Type": "application/json"}, "/v1/traces", 415),
        (b"\xff\xff\xff not protobuf", PROTOBUF, "/v1/traces", 400),
        (b"not gzip at all", {**PROTOBUF, "Content-Encoding": "gzip"}, "/v1/traces", 400),
        (_request_bytes(), {**PROTOBUF, "Content-Encoding": "br"}, "/v1/traces", 415),
    ],
)
def test_http_rejects_bad_requests_and_keeps_serving(
    receiver: OtlpReceiver, body: bytes, headers: dict[str, str], path: str, status: int
) -> None:
    assert _post(receiver, body, headers, path)[0] == status
    assert receiver.spans() == []
    ok, _ = _post(
        receiver, gzip.compress(_request_bytes()), {**PROTOBUF, "Content-Encoding": "gzip"}
    )
    assert ok == 200
    [span] = receiver.wait_for_spans(1)
    assert (span.name, span.trace_id, span.span_id, span.kind, span.status_code) == (
        "raw",
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
        "UNSPECIFIED",
        "UNSET",
    )


def test_http_rejects_a_gzip_bomb(receiver: OtlpReceiver) -> None:
    bomb = gzip.compress(b"\0" * (21 * 1024 * 1024))
    assert _post(receiver, bomb, {**PROTOBUF, "Content-Encoding": "gzip"})[0] == 400
    assert receiver.spans() == []


def test_endpoints_need_start_and_stop_closes_the_ports() -> None:
    rx = OtlpReceiver()
    with pytest.raises(RuntimeError, match="start"):
        _ = rx.grpc_endpoint
    with rx:
        http_port = urlsplit(rx.http_endpoint).port
        grpc_port = int(rx.grpc_endpoint.rsplit(":", 1)[1])
        assert rx.grpc_endpoint.startswith("127.0.0.1:")
        assert http_port != grpc_port
    rx.stop()  # idempotent
    for port in (http_port, grpc_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port or 0), timeout=2).close()


def test_a_busy_port_is_a_clear_error(receiver: OtlpReceiver) -> None:
    busy = urlsplit(receiver.http_endpoint).port or 0
    with pytest.raises(OSError):
        OtlpReceiver(http_port=busy).start()


def test_a_busy_grpc_port_is_a_clear_error(receiver: OtlpReceiver) -> None:
    busy = int(receiver.grpc_endpoint.rsplit(":", 1)[1])
    with pytest.raises(OSError, match="gRPC"):
        OtlpReceiver(grpc_port=busy).start()


def test_drain_requests_hands_over_and_forgets() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    with OtlpReceiver() as receiver:
        request = ExportTraceServiceRequest()
        receiver._accept(request, "grpc")
        receiver._accept(request, "http")
        assert len(receiver.drain_requests()) == 2
        assert receiver.requests == []
        assert receiver.drain_requests() == []


def test_on_request_gets_each_request_raw_and_nothing_is_kept(exporter: SpanExporter) -> None:
    arrived: list[ExportTraceServiceRequest] = []
    with OtlpReceiver(on_request=arrived.append) as counting:
        target: SpanExporter
        if isinstance(exporter, GrpcSpanExporter):
            target = GrpcSpanExporter(endpoint=counting.grpc_endpoint, insecure=True)
        else:
            target = HttpSpanExporter(endpoint=counting.http_endpoint + "/v1/traces")
        provider = _provider(target)
        tracer = provider.get_tracer("counting")
        for n in range(3):
            tracer.start_span(f"s{n}").end()
        provider.shutdown()
        assert [s.name for r in arrived for s in r.resource_spans[0].scope_spans[0].spans] == [
            "s0",
            "s1",
            "s2",
        ]
        assert counting.spans() == [] and counting.requests == []
