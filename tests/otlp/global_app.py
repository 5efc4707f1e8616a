"""configure() with the global provider, run in a fresh interpreter by test_global.py.

Modes: ``twice GRPC_ENDPOINT HTTP_ENDPOINT`` (idempotence and reconfiguration), ``propagators``
(what OTEL_PROPAGATORS installs), ``adopt`` (a provider installed before configure()). Prints one
JSON line with what it observed.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kilostar_otel
from kilostar_otel import KiloStarSpanProcessor, bind_request_id


def processors(provider: Any) -> list[str]:
    multi = provider._active_span_processor
    return [type(p).__name__ for p in multi._span_processors]


def twice(grpc_endpoint: str, http_endpoint: str) -> dict[str, Any]:
    first = kilostar_otel.configure("twice-svc", endpoint=grpc_endpoint, sampler="always_off")
    again = kilostar_otel.configure("twice-svc", endpoint=grpc_endpoint, sampler="always_off")
    tracer = trace.get_tracer("global_app")  # obtained before the reconfiguration below
    bind_request_id("req-twice-1")
    tracer.start_span("dropped by always_off").end()
    reconfigured = kilostar_otel.configure("twice-svc", endpoint=grpc_endpoint, sampler="always_on")
    tracer.start_span("one").end()
    first.force_flush(10_000)
    moved = kilostar_otel.configure(
        "twice-svc", endpoint=http_endpoint, protocol="http/protobuf", sampler="always_on"
    )
    tracer.start_span("two").end()
    same = {"endpoint": http_endpoint, "protocol": "http/protobuf", "sampler": "always_on"}
    try:
        kilostar_otel.configure("another-name", strict=True, **same)  # type: ignore[arg-type]
        rename_error = ""
    except ValueError as exc:
        rename_error = str(exc)
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("kilostar_otel.configure").addHandler(handler)
    lenient = kilostar_otel.configure("another-name", **same)  # type: ignore[arg-type]
    logging.getLogger("kilostar_otel.configure").removeHandler(handler)
    provider = trace.get_tracer_provider()
    report = {
        "same_handle": first is again is reconfigured is moved,
        "provider_is_global": provider is first.tracer_provider,
        "processors": processors(provider),
        "sampler": first.sampler.get_description(),
        "endpoint": first.endpoint,
        "rename_error": rename_error,
        "lenient_same_handle": lenient is first,
        "lenient_warnings": warnings,
        "service_name": first.tracer_provider.resource.attributes["service.name"],
        "propagator_fields": sorted(propagate.get_global_textmap().fields),
    }
    first.shutdown(10_000)
    report["dropped"] = first.dropped_spans
    return report


def propagators() -> dict[str, Any]:
    handle = kilostar_otel.configure(exporter="none")
    fields = sorted(propagate.get_global_textmap().fields)
    handle.shutdown()
    return {"propagator_fields": fields, "handle_fields": sorted(handle.propagator.fields)}


def adopt() -> dict[str, Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(KiloStarSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    handle = kilostar_otel.configure("ignored", exporter="console")
    again = kilostar_otel.configure("ignored", exporter="console")
    bind_request_id("req-adopt-1")
    trace.get_tracer("t").start_span("adopted").end()
    return {
        "processors": processors(provider),
        "handle_provider_is_global": handle.tracer_provider is provider,
        "exporter": repr(handle.exporter),
        "again_provider_is_global": again.tracer_provider is provider,
        "attributes": dict(memory.get_finished_spans()[0].attributes or {}),
        "propagator_fields": sorted(propagate.get_global_textmap().fields),
    }


def main() -> int:
    mode = sys.argv[1]
    if mode == "twice":
        report = twice(sys.argv[2], sys.argv[3])
    elif mode == "propagators":
        report = propagators()
    else:
        report = adopt()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
