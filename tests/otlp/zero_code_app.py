"""A traced program with no set-up code at all, run by the zero-code test under
``opentelemetry-instrument``: whatever the distro/configurator installed does the work.

It handles one incoming request (request id + a foreign baggage entry), starts a workflow, then
prints how the global provider is set up and the ids it saw as one JSON line.
"""

from __future__ import annotations

import json
import sys

from opentelemetry import propagate, trace
from opentelemetry.context import attach, detach

from kilostar_otel import KiloStarSpanProcessor, get_request_id, workflow

INCOMING = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "X-Request-Id": "req-zero-code-1",
    "baggage": "tenant=acme-secret",
}


def main() -> int:
    provider = trace.get_tracer_provider()
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
    tracer = trace.get_tracer("zero_code_app")
    token = attach(propagate.extract(INCOMING))
    try:
        with tracer.start_as_current_span("GET /plan", kind=trace.SpanKind.SERVER):
            request_id = get_request_id()
            with workflow("plan") as wf:
                with tracer.start_as_current_span("step"):
                    pass
    finally:
        detach(token)
    flushed = provider.force_flush(10_000) if hasattr(provider, "force_flush") else False
    report = {
        "provider": type(provider).__name__,
        "kilostar_processors": sum(isinstance(p, KiloStarSpanProcessor) for p in processors),
        "sampler": getattr(provider, "sampler", None).__class__.__name__,
        "propagator_fields": sorted(propagate.get_global_textmap().fields),
        "request_id": request_id,
        "workflow_trace_id": wf.trace_id,
        "flushed": flushed,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
