"""The fast OTLP encoder writes exactly what the SDK's encoder writes, or hands the batch back.

``configure()`` exports OTLP/gRPC through the SDK's exporter with :mod:`kilostar_otel._otlp` as
its encoder; these tests compare its bytes with ``encode_spans(...).SerializeToString()`` for
spans of every shape (kinds, remote parents, trace state, events, links, statuses, limits, every
attribute type, several resources and scopes) and check the fallback and the wire.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from kilostar_otel import configure, request_id_scope
from kilostar_otel._otlp import UnsupportedSpanError, encode_trace_request, grpc_span_exporter_class
from kilostar_otel.viewer.receiver import OtlpReceiver


class Level(enum.IntEnum):
    HIGH = 3


class Colour(str, enum.Enum):
    RED = "red"


def _sdk_bytes(spans: list[ReadableSpan]) -> bytes:
    return bytes(encode_spans(spans).SerializeToString())


@pytest.fixture
def recorded() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "enc", "replica": 2}, "https://schema/r")
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_every_span_shape_encodes_to_the_sdks_bytes(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    scoped = provider.get_tracer("a", "1.2", schema_url="https://schema/s", attributes={"x": 1})
    plain = provider.get_tracer("b")
    remote = SpanContext(
        0xABC,
        0xDEF,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1"), ("other@tenant", "x")]),
    )
    attributes = {
        "str": "é ☃",
        "empty": "",
        "false": False,
        "neg": -5,
        "big": 2**62,
        "min": -(2**63),
        "zero": 0.0,
        "nan": math.nan,
        "inf": -math.inf,
        "enum_int": Level.HIGH,
        "enum_str": Colour.RED,
        "ints": [1, -2, 3],
        "strs": ("a", ""),
        "bools": [True, False],
        "floats": [1.5],
        "bytes": b"\x00\xff",
        "empty_list": [],
    }
    for kind in SpanKind:
        with scoped.start_as_current_span(f"s-{kind.name}", kind=kind, attributes=attributes) as s:
            s.add_event("event", {"n": 1, "s": "v"})
            s.add_event("", timestamp=0)
            s.set_status(Status(StatusCode.ERROR, "it broke"))
            with plain.start_as_current_span(
                "child", links=[Link(remote, {"why": "because"}), Link(s.get_span_context())]
            ) as child:
                child.set_status(Status(StatusCode.OK))
    scoped.start_span("remote child", context=set_span_in_context(NonRecordingSpan(remote))).end()
    plain.start_span("").end()
    other = TracerProvider(resource=Resource.create({"service.name": "other"}))
    other.add_span_processor(SimpleSpanProcessor(exporter))
    other.get_tracer("a", "1.2").start_span("elsewhere").end()
    spans = list(exporter.get_finished_spans())
    assert len(spans) == 13
    assert encode_trace_request(spans) == _sdk_bytes(spans)
    # Interleaved resources and scopes group exactly as the SDK groups them.
    mixed = [spans[-1], *spans[:3], spans[-1], *spans[3:-1]]
    assert encode_trace_request(mixed) == _sdk_bytes(mixed)
    assert encode_trace_request([]) == _sdk_bytes([])


def test_span_limits_report_dropped_counts_like_the_sdk() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        span_limits=SpanLimits(max_span_attributes=2, max_events=1, max_links=1)
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    link = SpanContext(1, 2, is_remote=False)
    span = provider.get_tracer("t").start_span(
        "limited", attributes={"a": 1, "b": 2, "c": 3}, links=[Link(link), Link(link)]
    )
    span.add_event("one")
    span.add_event("two")
    span.end()
    spans = list(exporter.get_finished_spans())
    assert encode_trace_request(spans) == _sdk_bytes(spans)
    decoded = ExportTraceServiceRequest.FromString(encode_trace_request(spans))
    out = decoded.resource_spans[0].scope_spans[0].spans[0]
    assert (out.dropped_attributes_count, out.dropped_events_count, out.dropped_links_count) == (
        1,
        1,
        1,
    )


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)


@given(st.dictionaries(st.text(min_size=1, max_size=12), _values, max_size=6))
def test_any_attributes_encode_to_the_sdks_bytes(attributes: dict[str, object]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("s")
    # Straight into the span's attributes: values the SDK would refuse still reach the encoder.
    span._attributes._dict.update(attributes)  # type: ignore[attr-defined]
    span.end()
    spans = list(exporter.get_finished_spans())
    try:
        ours = encode_trace_request(spans)
    except UnsupportedSpanError:
        return  # handed to the SDK's encoder (strings that are not UTF-8 encodable)
    assert ours == _sdk_bytes(spans)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, object(), "\ud800"])
def test_what_the_sdk_would_log_and_skip_is_handed_back(value: object) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("s", attributes={"ok": 1})
    span._attributes._dict["bad"] = value  # type: ignore[attr-defined]
    span.end()
    spans = list(exporter.get_finished_spans())
    with pytest.raises(UnsupportedSpanError):
        encode_trace_request(spans)
    # The exporter then uses the SDK's encoder, which logs and skips the one bad attribute.
    exporter_class = grpc_span_exporter_class()
    fallback = exporter_class(endpoint="127.0.0.1:1", insecure=True)
    try:
        request = fallback._translate_data(spans)
    finally:
        fallback.shutdown()
    attributes = {kv.key for kv in request.resource_spans[0].scope_spans[0].spans[0].attributes}
    assert attributes == {"ok"}


@pytest.mark.parametrize("value", [None, [None], ["a", None, "b"], [1, [None]]])
def test_none_values_reach_the_wire_as_the_installed_sdk_encodes_them(value: object) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("s", attributes={"ok": 1})
    span._attributes._dict["maybe"] = value  # type: ignore[attr-defined]
    span.end()
    spans = list(exporter.get_finished_spans())
    fallback = grpc_span_exporter_class()(endpoint="127.0.0.1:1", insecure=True)
    try:
        request = fallback._translate_data(spans)
        # The fast encoder's bytes go on the wire as they are; the SDK's message is serialized.
        sent = request if isinstance(request, bytes) else request.SerializeToString()
    finally:
        fallback.shutdown()
    # Whether the fast encoder writes the batch (OTel >= 1.43 encodes None as an empty value) or
    # hands it back (older releases log and skip the attribute), the bytes are the SDK's.
    assert sent == _sdk_bytes(spans)


def test_configure_grpc_exports_with_the_fast_encoder_and_spans_arrive_intact() -> None:
    with OtlpReceiver() as receiver:
        telemetry = configure(
            "fast-enc", endpoint=f"http://{receiver.grpc_endpoint}", set_global=False
        )
        assert isinstance(telemetry.exporter, grpc_span_exporter_class())
        tracer = telemetry.get_tracer("wire")
        with request_id_scope("req-fast-1"):
            for n in range(300):
                with tracer.start_as_current_span("step", attributes={"n": n, "tags": ["a"]}):
                    pass
        assert telemetry.force_flush(10_000)
        received = receiver.wait_for_spans(300)
        telemetry.shutdown()
    assert sorted(s.attributes["n"] for s in received) == list(range(300))
    for span in received:
        assert span.attributes["kilostar.request_id"] == "req-fast-1"
        assert span.attributes["tags"] == ("a",)
        assert span.resource["service.name"] == "fast-enc"
        assert span.scope_name == "wire"
