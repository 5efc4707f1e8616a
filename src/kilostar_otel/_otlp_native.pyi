"""The common span's OTLP encoding in C (``_otlp_native.c``); see :mod:`kilostar_otel._otlp`."""

from collections.abc import Callable
from typing import Any

__all__ = ["encode", "join", "setup"]

def encode(fields: tuple[Any, ...], /) -> bytes | None:
    """The ``span_wire_fields()`` tuple of a common span as its ``ScopeSpans.spans`` field;
    None for a span only the Python encoder handles."""

def join(
    entries: list[Any],
    resource_parts: Callable[[Any], tuple[bytes, bytes]],
    scope_parts: Callable[[Any], tuple[bytes, bytes]],
    /,
) -> bytes | None:
    """The export queue's ``(size, encoded span, resource, scope)`` entries as one serialized
    ``ExportTraceServiceRequest``, grouped by resource and scope; ``resource_parts(resource)``
    and ``scope_parts(scope)`` give the encoded fields around a resource's scopes and a scope's
    spans. None for entries shaped otherwise, or too many groups."""

def setup(
    kinds: tuple[Any, ...], attribute_items: Callable[[Any], Any], empty_trace_state: object, /
) -> None:
    """The ``SpanKind`` members INTERNAL..CONSUMER (compared by identity), how to read a mapping
    of attributes that is not a dict (``_internals.attribute_items``), and OpenTelemetry's shared
    empty ``TraceState`` (a span carrying it has no trace state, without asking)."""
