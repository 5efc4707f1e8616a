"""Differential property test: for spans of any shape, the fast encoder writes the SDK's bytes.

Every field of a span is drawn: name, kind, parent (none, local, remote), trace state, start and
end, attributes of every type (None inside lists included; span limits drop some or all of
them), events and links (with their attributes and drops), status (code and description), the
resource and its schema URL, the instrumentation scope (name, version, schema URL) and several
spans per batch.
"""

from __future__ import annotations

from typing import Any

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

from kilostar_otel._internals import sdk_encodes_none
from kilostar_otel._otlp import UnsupportedSpanError, encode_trace_request

TEXT = st.text(max_size=16)
KEYS = st.text(min_size=1, max_size=8)
SCALARS = (
    TEXT
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=8)
)
VALUES = (
    SCALARS
    | st.lists(TEXT, max_size=3)
    | st.lists(st.integers(0, 2**40), max_size=3)
    | st.lists(st.none() | TEXT, max_size=3)  # None inside a list: kept by the SDK
    | st.lists(st.none() | st.floats(allow_nan=False), max_size=3)
)
ATTRIBUTES = st.dictionaries(KEYS, VALUES, max_size=5)
IDS = st.integers(1, 2**64 - 1)
TRACE_STATE = st.lists(
    st.tuples(
        st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True),
        st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True),
    ),
    max_size=3,
    unique_by=lambda kv: kv[0],
)

SPAN = st.fixed_dictionaries(
    {
        "name": TEXT,
        "kind": st.sampled_from(list(SpanKind)),
        "parent": st.sampled_from(["none", "local", "remote"]),
        "trace_state": TRACE_STATE,
        "start": st.integers(1, 2**62),
        "duration": st.integers(0, 10**12),
        "attributes": ATTRIBUTES,
        "events": st.lists(st.tuples(TEXT, ATTRIBUTES, st.integers(1, 2**62)), max_size=3),
        "links": st.lists(st.tuples(IDS, IDS, st.booleans(), ATTRIBUTES), max_size=3),
        "status": st.sampled_from(list(StatusCode)),
        "description": st.none() | TEXT,
    }
)
BATCH = st.fixed_dictionaries(
    {
        "limits": st.sampled_from([None, 0, 1, 2]),  # attributes, events and links per span
        "resource": ATTRIBUTES,
        "resource_schema": st.none() | st.just("https://schema/r"),
        "scope": st.tuples(TEXT, st.none() | TEXT, st.none() | st.just("https://schema/s")),
        "spans": st.lists(SPAN, min_size=1, max_size=4),
    }
)


def _record(batch: dict[str, Any]) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    n = batch["limits"]
    limits = SpanLimits(
        max_span_attributes=n,
        max_events=n,
        max_links=n,
        max_event_attributes=n,
        max_link_attributes=n,
    )
    provider = TracerProvider(
        resource=Resource(batch["resource"], batch["resource_schema"]), span_limits=limits
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    name, version, schema = batch["scope"]
    tracer = provider.get_tracer(name or "scope", version, schema_url=schema)
    for drawn in batch["spans"]:
        context = None
        if drawn["parent"] != "none":
            parent = SpanContext(
                0x1234, 0x5678, drawn["parent"] == "remote", TraceFlags(1),
                TraceState(drawn["trace_state"]),
            )  # fmt: skip
            context = set_span_in_context(NonRecordingSpan(parent))
        links = [
            Link(SpanContext(t, s, remote, TraceFlags(1)), attributes)
            for t, s, remote, attributes in drawn["links"]
        ]
        span = tracer.start_span(
            drawn["name"],
            context=context,
            kind=drawn["kind"],
            attributes=drawn["attributes"],
            links=links,
            start_time=drawn["start"],
        )
        for event_name, attributes, timestamp in drawn["events"]:
            span.add_event(event_name, attributes, timestamp)
        code = drawn["status"]
        span.set_status(Status(code, drawn["description"] if code is StatusCode.ERROR else None))
        span.end(end_time=drawn["start"] + drawn["duration"])
    return list(exporter.get_finished_spans())


@given(BATCH)
def test_every_span_field_encodes_to_the_sdks_bytes(batch: dict[str, Any]) -> None:
    spans = _record(batch)
    try:
        ours = encode_trace_request(spans)
    except UnsupportedSpanError:
        # Only where the SDK skips None values (before 1.43): the batch goes to its encoder.
        assert not sdk_encodes_none()
        return
    assert ours == bytes(encode_spans(spans).SerializeToString())


def test_dropped_attributes_count_survives_when_every_attribute_was_dropped() -> None:
    batch = {
        "limits": 0,
        "resource": {},
        "resource_schema": None,
        "scope": ("s", None, None),
        "spans": [
            {
                "name": "all dropped", "kind": SpanKind.INTERNAL, "parent": "none",
                "trace_state": [], "start": 1, "duration": 1, "attributes": {"a": 1, "b": 2},
                "events": [], "links": [], "status": StatusCode.UNSET, "description": None,
            }
        ],
    }  # fmt: skip
    (span,) = _record(batch)
    assert span.dropped_attributes == 2 and not span.attributes
    assert encode_trace_request([span]) == bytes(encode_spans([span]).SerializeToString())
