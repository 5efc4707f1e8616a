"""Every name kilostar-otel puts on the wire, on spans or in entry points, defined once.

These strings are a contract (docs, dashboards and other services rely on them); import them from
here instead of spelling them out.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BAGGAGE_HEADER",
    "DISTRIBUTION_NAME",
    "ENTRY_POINT_NAME",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_WORKFLOW_NAME",
    "INSTRUMENTATION_NAME",
    "INVOKE_WORKFLOW",
    "LOG_EVENTS_DROPPED_ATTRIBUTE",
    "REQUEST_ID_ATTRIBUTE",
    "REQUEST_ID_BAGGAGE",
    "REQUEST_ID_HEADER",
    "REQUEST_ID_HEADER_NAME",
    "SPAN_CUT_ATTRIBUTE",
    "TRACEPARENT_HEADER",
    "TRACESTATE_HEADER",
    "TRACE_ID_ATTRIBUTE",
    "WORKFLOW_NAME_ATTRIBUTE",
    "WORKFLOW_STARTED_EVENT",
]

#: W3C baggage entry that carries the request id.
REQUEST_ID_BAGGAGE: Final = "kilostar.request_id"

#: Span attribute: the request id (every span started while one is bound).
REQUEST_ID_ATTRIBUTE: Final = "kilostar.request_id"
#: Span attribute: the workflow trace id (every span inside a workflow), and the attribute of
#: :data:`WORKFLOW_STARTED_EVENT`.
TRACE_ID_ATTRIBUTE: Final = "kilostar.trace_id"
#: Span attribute on a workflow root: the workflow's name.
WORKFLOW_NAME_ATTRIBUTE: Final = "kilostar.workflow.name"
#: Event on the request span when a workflow starts.
WORKFLOW_STARTED_EVENT: Final = "kilostar.workflow.started"
#: Span attribute set by the export pipeline on a span it had to change to send it: what it did
#: (``"encoding"``: text that is not valid UTF-8 was escaped; ``"size"``: long values were cut).
SPAN_CUT_ATTRIBUTE: Final = "kilostar.span.cut"
#: Span attribute: log records not recorded as span events because the span reached its cap.
LOG_EVENTS_DROPPED_ATTRIBUTE: Final = "kilostar.log.dropped_events"

#: GenAI semantic convention on workflow roots: ``gen_ai.operation.name = "invoke_workflow"``.
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
INVOKE_WORKFLOW: Final = "invoke_workflow"

#: The request-id header as written on the wire (lower case; read in any case).
REQUEST_ID_HEADER: Final = "x-request-id"
#: The same header as the middlewares' ``header_name`` default spells it.
REQUEST_ID_HEADER_NAME: Final = "X-Request-Id"
BAGGAGE_HEADER: Final = "baggage"
TRACEPARENT_HEADER: Final = "traceparent"
TRACESTATE_HEADER: Final = "tracestate"

#: The distribution name (``telemetry.distro.name`` on the resource, the CLI's name).
DISTRIBUTION_NAME: Final = "kilostar-otel"
#: Our name in the ``opentelemetry_propagator``, ``_configurator`` and ``_distro`` groups.
ENTRY_POINT_NAME: Final = "kilostar"
#: The instrumentation scope of the spans this library starts itself.
INSTRUMENTATION_NAME: Final = "kilostar_otel"
