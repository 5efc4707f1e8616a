"""The C encoder writes the Python encoder's bytes for the common span and declines every other.

``kilostar_otel._otlp_native`` encodes a span without trace state or status whose attribute values
(its own, its events' and its links') are exactly str, bool, int or float; for anything else it
returns None and the
Python encoder (or, through it, the SDK's) takes the span. The suite always runs with the
extension built: a missing build fails here instead of leaving the C path untested.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
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

from kilostar_otel import _otlp, _otlp_native  # not built: the module fails, nothing skips
from kilostar_otel._internals import span_wire_fields


class Level(enum.IntEnum):
    HIGH = 3


SCALARS = (
    st.text(max_size=40)
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()  # NaN and infinities included: the double's bits are copied
)
ATTRIBUTES = st.dictionaries(st.text(max_size=10), SCALARS, max_size=4)
COMMON = st.fixed_dictionaries(
    {
        "name": st.text(max_size=20),
        "kind": st.sampled_from(list(SpanKind)),
        "parent": st.sampled_from(["none", "local", "remote"]),
        "attributes": st.dictionaries(st.text(max_size=10), SCALARS, max_size=8),
        "events": st.lists(
            st.tuples(st.text(max_size=8), ATTRIBUTES, st.integers(0, 2**63)), max_size=3
        ),
        "links": st.lists(
            st.tuples(
                st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.booleans(), ATTRIBUTES
            ),
            max_size=3,
        ),
        "limit": st.sampled_from([None, 0, 2]),
        "start": st.integers(0, 2**63),
        "duration": st.integers(0, 10**12),
        "trace_id": st.integers(1, 2**128 - 1),
    }
)


def _finished(
    name: str = "s",
    *,
    attributes: dict[str, Any] | None = None,
    limit: int | None = None,
    parent: str = "none",
    kind: SpanKind = SpanKind.INTERNAL,
    start: int | None = 1_000,
    end: int | None = 2_000,
    trace_id: int | None = None,
    events: Sequence[tuple[str, dict[str, Any], int]] = (),
    links: Sequence[tuple[int, int, bool, dict[str, Any]]] = (),
    shape: str = "common",
) -> ReadableSpan:
    """One finished span from the real SDK; ``shape`` adds what only Python encodes."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "native"}),
        span_limits=SpanLimits(
            max_span_attributes=limit,
            max_events=limit,
            max_links=limit,
            max_event_attributes=limit,
            max_link_attributes=limit,
        ),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    context = None
    trace_state = TraceState([("k", "v")]) if shape == "trace_state" else None
    if parent != "none" or trace_id is not None or trace_state is not None:
        remote = SpanContext(
            trace_id or 0x1234, 0x5678, parent == "remote", TraceFlags(1), trace_state
        )
        context = set_span_in_context(NonRecordingSpan(remote))
    drawn_links = [
        Link(SpanContext(t, s, remote, TraceFlags(1)), link_attributes)
        for t, s, remote, link_attributes in links
    ]
    span = provider.get_tracer("t").start_span(
        name, context=context, kind=kind, attributes=attributes, links=drawn_links, start_time=start
    )
    for event_name, event_attributes, timestamp in events:
        span.add_event(event_name, event_attributes, timestamp)
    if shape == "error":
        span.set_status(Status(StatusCode.ERROR, "boom"))
    span.end(end_time=end)
    (finished,) = exporter.get_finished_spans()
    provider.shutdown()
    return finished


def _sdk_bytes(span: ReadableSpan) -> bytes:
    return bytes(encode_spans([span]).SerializeToString())


def test_the_c_encoder_is_built_and_used() -> None:
    assert _otlp._native_encode is _otlp_native.encode
    span = _finished(attributes={"kilostar.request_id": "req-1", "n": 5})
    assert _otlp_native.encode(span_wire_fields(span)) is not None


@given(COMMON)
def test_common_spans_are_encoded_in_c_to_the_python_and_sdk_bytes(drawn: dict[str, Any]) -> None:
    span = _finished(
        drawn["name"],
        attributes=drawn["attributes"],
        limit=drawn["limit"],
        parent=drawn["parent"],
        kind=drawn["kind"],
        start=drawn["start"],
        end=drawn["start"] + drawn["duration"],
        trace_id=drawn["trace_id"] if drawn["parent"] != "none" else None,
        events=drawn["events"],
        links=drawn["links"],
    )
    fields = span_wire_fields(span)
    encoded = _otlp_native.encode(fields)
    assert encoded is not None
    assert encoded == _otlp._python_span(fields)
    assert _otlp.encode_trace_request([span]) == _sdk_bytes(span)


def test_large_spans_grow_the_buffer_and_long_lengths_take_three_bytes() -> None:
    attributes: dict[str, Any] = {f"key.{n}": "x" * (n * 37) for n in range(60)}
    attributes["huge"] = "y" * 40_000  # a length over 16,383: a three-byte varint
    span = _finished("big " * 100, attributes=attributes)
    fields = span_wire_fields(span)
    encoded = _otlp_native.encode(fields)
    assert encoded is not None and len(encoded) > 100_000
    assert encoded == _otlp._python_span(fields)
    assert _otlp.encode_trace_request([span]) == _sdk_bytes(span)


def test_what_workflow_adds_is_encoded_in_c_a_link_and_an_event_with_attributes() -> None:
    span = _finished(
        attributes={"kilostar.request_id": "req-1"},
        events=[("kilostar.workflow.started", {"kilostar.trace_id": "ab" * 16}, 5)],
        links=[(0xAB, 0xCD, True, {"kilostar.link": "started_by"}), (1, 2, False, {})],
    )
    fields = span_wire_fields(span)
    encoded = _otlp_native.encode(fields)
    assert encoded is not None
    assert encoded == _otlp._python_span(fields)
    assert _otlp.encode_trace_request([span]) == _sdk_bytes(span)


@pytest.mark.parametrize("where", ["event", "link"])
def test_a_value_c_does_not_handle_in_an_event_or_link_declines_the_span(where: str) -> None:
    bad: dict[str, Any] = {"list": ["a", "b"]}
    span = _finished(
        events=[("e", bad, 5)] if where == "event" else [],
        links=[(1, 2, False, bad)] if where == "link" else [],
    )
    assert _otlp_native.encode(span_wire_fields(span)) is None
    assert _otlp.encode_trace_request([span]) == _sdk_bytes(span)


@pytest.mark.parametrize("shape", ["trace_state", "error"])
def test_other_shapes_are_declined_and_still_encode_to_the_sdks_bytes(shape: str) -> None:
    span = _finished(attributes={"a": 1}, shape=shape)
    assert _otlp_native.encode(span_wire_fields(span)) is None
    assert _otlp.encode_trace_request([span]) == _sdk_bytes(span)


@pytest.mark.parametrize(
    "value",
    [["a", "b"], (1, 2), b"raw", Level.HIGH, 2**63, -(2**63) - 1, "\ud800", None, object()],
    ids=["list", "tuple", "bytes", "int-enum", "int64+1", "int64-1", "surrogate", "none", "object"],
)
def test_values_other_than_exact_scalars_are_declined(value: object) -> None:
    span = _finished(attributes={"ok": 1})
    span._attributes._dict["v"] = value  # type: ignore[attr-defined]  # past the SDK's checks
    assert _otlp_native.encode(span_wire_fields(span)) is None


def test_a_name_that_is_not_utf8_encodable_is_declined() -> None:
    span = _finished("bad \ud800 name")
    assert _otlp_native.encode(span_wire_fields(span)) is None


#: A well-formed field tuple of a server span, and the sampled flag, resource and scope after it.
WELL_FORMED = (1, 2, None, None, False, "n", SpanKind.SERVER, 1, 2, None, {}, 0, (), 0, (), 0)
ORIGIN = (True, Resource.create({}), None)


def _with(index: int, value: object) -> tuple[Any, ...]:
    fields = list(WELL_FORMED + ORIGIN)
    fields[index] = value
    return tuple(fields)


def test_the_well_formed_fields_the_malformed_ones_change_are_encoded() -> None:
    assert _otlp_native.encode(WELL_FORMED + ORIGIN) == _otlp._python_span(WELL_FORMED + ORIGIN)


@pytest.mark.parametrize(
    "fields",
    [
        None,
        (),
        (None,) * 19,
        ("x",) * 19,
        WELL_FORMED,  # without the sampled flag, resource and scope
        _with(6, None),  # kind unknown
        _with(0, -1),
        _with(0, 2**128),
        _with(1, 2**64),
        _with(7, -5),
        _with(4, 1),
        _with(10, {1: 2}),
        _with(10, []),
        _with(7, 1.5),
    ],
)
def test_malformed_fields_are_declined_without_raising(fields: Any) -> None:
    assert _otlp_native.encode(fields) is None


def test_an_ordered_dict_is_read_in_its_own_order_not_its_dicts() -> None:
    # OpenTelemetry 1.40 keeps bounded attributes in an OrderedDict; move_to_end changes the
    # OrderedDict's order but not the order of the dict underneath it.
    span = _finished(attributes={"a": 1})
    ordered = OrderedDict([("a", 1), ("b", "two"), ("c", 3.0)])
    ordered.move_to_end("a")
    span._attributes._dict = ordered  # type: ignore[attr-defined]
    fields = span_wire_fields(span)
    encoded = _otlp_native.encode(fields)
    assert encoded is not None
    assert encoded == _otlp._python_span(fields)
    assert encoded.index(b"\x0a\x01c") < encoded.index(b"\x0a\x01a")  # c before a, as iterated


# -- joining the export queue ---------------------------------------------------------------------


def _spans_of_origins() -> list[ReadableSpan]:
    """Finished spans of three resources and four scopes each: equal scopes and resources that
    are distinct objects, schema URLs on a scope and on a resource, a scope with attributes."""
    spans = []
    providers = [
        TracerProvider(resource=Resource.create({"service.name": "one"})),
        TracerProvider(resource=Resource({"service.name": "two"}, schema_url="https://s/1")),
        TracerProvider(resource=Resource.create({"service.name": "one"})),  # equal to the first
    ]
    for number, provider in enumerate(providers):
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracers = [
            provider.get_tracer("a", "1.0"),
            provider.get_tracer("b", schema_url="https://s/2"),
            provider.get_tracer("c", attributes={"scope.n": number}),
            provider.get_tracer("a", "1.0"),
        ]
        for index, tracer in enumerate(tracers):
            tracer.start_span(f"s{number}.{index}", attributes={"n": index}).end()
        spans.extend(exporter.get_finished_spans())
        provider.shutdown()
    return spans


ORIGIN_SPANS = _spans_of_origins()
PARTS = (_otlp._resource_parts, _otlp._scope_parts)


def _queue_entries(spans: Sequence[ReadableSpan]) -> list[tuple[int, bytes, Any, Any]]:
    entries = []
    for span in spans:
        encoded = _otlp.encode_span(span)
        entries.append((len(encoded), encoded, span.resource, span.instrumentation_scope))
    return entries


@given(st.lists(st.sampled_from(ORIGIN_SPANS), max_size=40))
def test_the_queue_is_joined_in_c_to_the_python_and_sdk_bytes(spans: list[ReadableSpan]) -> None:
    entries = _queue_entries(spans)
    joined = _otlp_native.join(entries, *PARTS)
    assert joined is not None
    assert joined == _otlp.join_encoded_spans((e[2], e[3], e[1]) for e in entries)
    assert joined == bytes(encode_spans(spans).SerializeToString())
    assert _otlp.join_queued(entries) == joined


def test_more_groups_than_c_keeps_are_joined_in_python_to_the_sdks_bytes() -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "many"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for n in range(40):  # 40 scopes: more than the C join's 32 groups
        provider.get_tracer(f"scope-{n}").start_span("s").end()
    spans = exporter.get_finished_spans()
    entries = _queue_entries(spans)
    assert _otlp_native.join(entries, *PARTS) is None
    assert _otlp.join_queued(entries) == bytes(encode_spans(spans).SerializeToString())


@pytest.mark.parametrize(
    "entry",
    [(1, "not bytes", None, None), (1, b"x", None), [1, b"x", None, None], b"x"],
)
def test_entries_shaped_otherwise_are_joined_in_python(entry: Any) -> None:
    assert _otlp_native.join([entry], *PARTS) is None


def test_an_empty_queue_joins_to_an_empty_request() -> None:
    assert _otlp_native.join([], *PARTS) == b""


def test_each_resource_and_each_scope_is_encoded_once_per_batch() -> None:
    resources: list[Any] = []
    scopes: list[Any] = []

    def resource_parts(resource: Any) -> tuple[bytes, bytes]:
        resources.append(resource)
        return _otlp._resource_parts(resource)

    def scope_parts(scope: Any) -> tuple[bytes, bytes]:
        scopes.append(scope)
        return _otlp._scope_parts(scope)

    spans = ORIGIN_SPANS * 3
    joined = _otlp_native.join(_queue_entries(spans), resource_parts, scope_parts)
    assert joined == bytes(encode_spans(spans).SerializeToString())
    distinct_resources = {span.resource for span in spans}
    assert len(resources) == len(distinct_resources)
    assert len(scopes) == len({(s.resource, s.instrumentation_scope) for s in spans})


@pytest.mark.parametrize("parts", [(b"x",), (b"x", "y"), [b"x", b"y"], None])
def test_parts_shaped_otherwise_are_a_type_error(parts: Any) -> None:
    entries = _queue_entries(ORIGIN_SPANS[:1])
    with pytest.raises(TypeError, match="tuple of 2 bytes"):
        _otlp_native.join(entries, lambda _: parts, _otlp._scope_parts)
    with pytest.raises(TypeError, match="tuple of 2 bytes"):
        _otlp_native.join(entries, _otlp._resource_parts, lambda _: parts)
