"""A tiny traced program for the wire tests, run in a fresh interpreter (configure() owns globals).

It calls ``kilostar_otel.configure()`` (the OTLP settings come from the ``OTEL_*`` variables the
test sets), handles one incoming request whose headers carry a request id and a foreign baggage
entry, starts a workflow with one step inside it, shuts the pipeline down, and prints the ids
it saw as one JSON line for the test to compare with what arrived over the wire.
"""

from __future__ import annotations

import json
import sys

from opentelemetry import trace
from opentelemetry.context import attach, detach

import kilostar_otel
from kilostar_otel import extract, get_request_id, get_trace_id, workflow

INCOMING = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "X-Request-Id": "req-wire-0001",
    "baggage": "tenant=acme-secret,kilostar.request_id=req-wire-0001",
}


def main() -> int:
    telemetry = kilostar_otel.configure(service_name=sys.argv[1] if len(sys.argv) > 1 else None)
    tracer = trace.get_tracer("wire_app")
    token = attach(extract(INCOMING))
    try:
        with tracer.start_as_current_span("GET /plan", kind=trace.SpanKind.SERVER) as request:
            with workflow("plan") as wf:
                with tracer.start_as_current_span("step"):
                    seen: dict[str, object] = {
                        "request_id": get_request_id(),
                        "trace_id": get_trace_id(),
                        "workflow_trace_id": wf.trace_id,
                    }
            ctx = request.get_span_context()
            seen.update(
                request_trace_id=format(ctx.trace_id, "032x"),
                request_span_id=format(ctx.span_id, "016x"),
            )
    finally:
        detach(token)
    flushed = telemetry.force_flush(10_000)
    telemetry.shutdown(10_000)
    seen.update(
        flushed=flushed,
        dropped=telemetry.dropped_spans,
        sampler=telemetry.sampler.get_description(),
        endpoint=telemetry.endpoint,
        protocol=telemetry.protocol,
    )
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
