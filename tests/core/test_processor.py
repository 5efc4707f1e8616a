"""KiloStarSpanProcessor stamps the two ids on every span, and only them."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import Span, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kilostar_otel import KiloStarSpanProcessor, request_id_scope, trace_id_scope
from kilostar_otel.propagation import KiloStarPropagator
from tests.conftest import Spans, Swallowed


def test_every_span_started_while_bound_carries_both_ids(
    tracer: trace.Tracer, spans: Spans
) -> None:
    with request_id_scope("req-p"), trace_id_scope("0af7651916cd43dd8448eb211c80319c"):
        with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner"):
            pass
    for span in spans.all():
        assert span.attributes["kilostar.request_id"] == "req-p"
        assert span.attributes["kilostar.trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_nothing_is_set_when_unbound(tracer: trace.Tracer, spans: Spans) -> None:
    with tracer.start_as_current_span("plain"):
        pass
    assert "kilostar.request_id" not in spans.named("plain").attributes
    assert "kilostar.trace_id" not in spans.named("plain").attributes


def test_only_a_request_id_when_only_it_is_bound(tracer: trace.Tracer, spans: Spans) -> None:
    with request_id_scope("req-only"), tracer.start_as_current_span("s"):
        pass
    assert dict(spans.named("s").attributes) == {"kilostar.request_id": "req-only"}


def test_ids_are_read_from_the_parent_context_given_to_start_span(
    tracer: trace.Tracer, spans: Spans
) -> None:
    extracted = KiloStarPropagator().extract({"x-request-id": "req-remote"})
    with request_id_scope("req-current"):
        tracer.start_span("server", context=extracted).end()
    assert spans.named("server").attributes["kilostar.request_id"] == "req-remote"


def test_ids_missing_from_the_given_context_come_from_the_current_one(
    tracer: trace.Tracer, spans: Spans
) -> None:
    # e.g. an instrumentation that extracts only traceparent, inside our middleware's scope
    with request_id_scope("req-mw"):
        tracer.start_span("server", context=context.Context()).end()
    assert spans.named("server").attributes["kilostar.request_id"] == "req-mw"


def test_client_baggage_never_becomes_span_attributes(tracer: trace.Tracer, spans: Spans) -> None:
    hostile = "user.password=hunter2,kilostar.request_id=req-ok,debug=true"
    ctx = KiloStarPropagator().extract({"baggage": hostile})
    ctx = baggage.set_baggage("user.password", "hunter2", ctx)
    token = context.attach(ctx)
    try:
        with tracer.start_as_current_span("s"):
            pass
    finally:
        context.detach(token)
    assert dict(spans.named("s").attributes) == {"kilostar.request_id": "req-ok"}


class _BrokenSpan:
    def set_attribute(self, *args: object) -> None:
        raise RuntimeError("broken span")

    set_attributes = set_attribute


@pytest.mark.parametrize("parent", [None, context.Context(), "not a context"])
def test_on_start_never_raises(parent: object, swallowed: Swallowed) -> None:
    processor = KiloStarSpanProcessor()
    with request_id_scope("req-x"), trace_id_scope("t-x"):
        processor.on_start(_BrokenSpan(), parent)  # type: ignore[arg-type]
    assert swallowed.count("KiloStarSpanProcessor.on_start") == 1


def test_processor_lifecycle_hooks_are_harmless() -> None:
    processor = KiloStarSpanProcessor()
    processor.on_end(None)  # type: ignore[arg-type]
    assert processor.force_flush() is True
    processor.shutdown()


def test_span_type_is_the_sdk_span(tracer: trace.Tracer) -> None:
    # on_start receives the SDK's own Span; make sure the signature we implement is the real one.
    with tracer.start_as_current_span("s") as span:
        assert isinstance(span, Span)


@pytest.mark.parametrize(
    ("limits", "expected_rid"),
    [
        (SpanLimits(max_attribute_length=5), "req-l"),  # the SDK's truncation still applies
        (SpanLimits(max_span_attributes=1), None),  # the SDK's count limit still applies
        (SpanLimits(), "req-long-id"),
    ],
)
def test_span_limits_are_respected(limits: SpanLimits, expected_rid: str | None) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=limits)
    provider.add_span_processor(KiloStarSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with request_id_scope("req-long-id"), trace_id_scope("0af7651916cd43dd8448eb211c80319c"):
        provider.get_tracer("t").start_span("s", attributes={"user": "x"}).end()
    (span,) = exporter.get_finished_spans()
    assert span.attributes.get("kilostar.request_id") == expected_rid
    if limits.max_span_attributes == 1:
        assert len(span.attributes) == 1
        assert span.dropped_attributes == 2
