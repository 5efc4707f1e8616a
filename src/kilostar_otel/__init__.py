"""kilostar-otel: KiloStar's two-tier request/workflow ids as first-class OpenTelemetry citizens.

``request_id`` (one user request) travels as the W3C baggage entry ``kilostar.request_id`` and the
``X-Request-Id`` header; ``trace_id`` (one workflow) is the trace id of the workflow's own OTel
trace, linked to the request that started it. The seed's context API keeps working unchanged.
"""

from __future__ import annotations

from kilostar_otel._version import __version__
from kilostar_otel.configure import Telemetry, configure
from kilostar_otel.context import (
    apply_snapshot,
    bind_request_id,
    bind_trace_id,
    get_request_id,
    get_trace_id,
    request_id_scope,
    reset_request_id,
    reset_trace_id,
    snapshot,
    trace_id_scope,
    wrap,
)
from kilostar_otel.ids import is_valid_request_id, new_request_id, new_trace_id
from kilostar_otel.processor import KiloStarSpanProcessor
from kilostar_otel.propagation import (
    KiloStarPropagator,
    default_propagator,
    extract,
    inject,
    set_global,
)
from kilostar_otel.workflow import Workflow, workflow

__all__ = [
    "KiloStarPropagator",
    "KiloStarSpanProcessor",
    "Telemetry",
    "Workflow",
    "__version__",
    "apply_snapshot",
    "bind_request_id",
    "bind_trace_id",
    "configure",
    "default_propagator",
    "extract",
    "get_request_id",
    "get_trace_id",
    "inject",
    "is_valid_request_id",
    "new_request_id",
    "new_trace_id",
    "request_id_scope",
    "reset_request_id",
    "reset_trace_id",
    "set_global",
    "snapshot",
    "trace_id_scope",
    "workflow",
    "wrap",
]
