"""A minimal demo: one request span that starts a workflow, printed by the console exporter."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import kilostar_otel as ko


def run_demo(args: object = None) -> int:
    """Print a request trace and the workflow trace it started; return 0."""
    provider = TracerProvider(resource=Resource.create({"service.name": "kilostar-demo"}))
    provider.add_span_processor(ko.KiloStarSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    tracer = provider.get_tracer("kilostar-demo")
    with (
        ko.request_id_scope(ko.new_request_id()),
        tracer.start_as_current_span("POST /chat"),
        ko.workflow("plan", tracer_provider=provider) as wf,
    ):
        with tracer.start_as_current_span("step retrieve"):
            pass
        print(f"request_id={ko.get_request_id()} trace_id={wf.trace_id}")
    provider.shutdown()
    return 0
