"""``KiloStarSpanProcessor``: stamps ``kilostar.request_id`` / ``kilostar.trace_id`` on every span.

It copies only its own two ids, never arbitrary baggage: client-sent baggage does not become span
attributes (unlike ``BaggageSpanProcessor`` with an allow-all predicate).
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from kilostar_otel._guard import internal_error
from kilostar_otel._idcontext import (
    TRACE_ID_KEY,
    current_request_id,
    current_trace_id,
    request_id_from,
)
from kilostar_otel._internals import current_context, writable_attributes
from kilostar_otel._names import REQUEST_ID_ATTRIBUTE, TRACE_ID_ATTRIBUTE

__all__ = ["REQUEST_ID_ATTRIBUTE", "TRACE_ID_ATTRIBUTE", "KiloStarSpanProcessor"]


class KiloStarSpanProcessor(SpanProcessor):
    """Sets ``kilostar.request_id`` and ``kilostar.trace_id`` on spans started while they are bound.

    Ids are read from the parent context the SDK passes to :meth:`on_start`; an id missing there is
    read from the current context. Nothing is set for an unbound id, and no hook ever raises.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Stamp the ids on ``span``."""
        try:
            if parent_context is None:
                current = current_context()
                request_id = current_request_id(current)
                trace_id: object = current_trace_id(current)
            else:
                request_id = request_id_from(parent_context) or current_request_id()
                trace_id = parent_context.get(TRACE_ID_KEY) or current_trace_id()
            if type(trace_id) is not str:
                trace_id = None
            if not request_id and not trace_id:
                return
            values = writable_attributes(span, 2)
            if values is not None:
                # The span was created a moment ago and is not shared yet, there is no
                # value-length limit and room for both keys, so the SDK's checks cannot change
                # what it stores; write the two validated strings directly.
                if request_id:
                    values[REQUEST_ID_ATTRIBUTE] = request_id
                if trace_id:
                    values[TRACE_ID_ATTRIBUTE] = trace_id
            elif request_id and trace_id:
                span.set_attributes(
                    {REQUEST_ID_ATTRIBUTE: request_id, TRACE_ID_ATTRIBUTE: trace_id}
                )
            elif request_id:
                span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
            elif trace_id:
                span.set_attribute(TRACE_ID_ATTRIBUTE, trace_id)
        except Exception as exc:
            internal_error("KiloStarSpanProcessor.on_start", exc)

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing to do when a span ends."""

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered; always succeeds."""
        return True
