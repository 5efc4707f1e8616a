"""``KiloStarSpanProcessor``: stamps ``kilostar.request_id`` / ``kilostar.trace_id`` on every span.

It copies only its own two ids, never arbitrary baggage: client-sent baggage does not become span
attributes (unlike ``BaggageSpanProcessor`` with an allow-all predicate).
"""

from __future__ import annotations

from typing import Final

from opentelemetry.context import Context, get_current
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from kilostar_otel.context import _TRACE_ID_KEY, request_id_from

__all__ = ["REQUEST_ID_ATTRIBUTE", "TRACE_ID_ATTRIBUTE", "KiloStarSpanProcessor"]

REQUEST_ID_ATTRIBUTE: Final = "kilostar.request_id"
TRACE_ID_ATTRIBUTE: Final = "kilostar.trace_id"


class KiloStarSpanProcessor(SpanProcessor):
    """Sets ``kilostar.request_id`` and ``kilostar.trace_id`` on spans started while they are bound.

    Ids are read from the parent context the SDK passes to :meth:`on_start`; an id missing there is
    read from the current context. Nothing is set for an unbound id, and no hook ever raises.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Stamp the ids on ``span``."""
        try:
            ctx = get_current() if parent_context is None else parent_context
            request_id = request_id_from(ctx)
            trace_id = ctx.get(_TRACE_ID_KEY)
            if parent_context is not None and (not request_id or not trace_id):
                current = get_current()
                request_id = request_id or request_id_from(current)
                trace_id = trace_id or current.get(_TRACE_ID_KEY)
            if request_id:
                if trace_id and type(trace_id) is str:
                    span.set_attributes(
                        {REQUEST_ID_ATTRIBUTE: request_id, TRACE_ID_ATTRIBUTE: trace_id}
                    )
                else:
                    span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
            elif trace_id and type(trace_id) is str:
                span.set_attribute(TRACE_ID_ATTRIBUTE, trace_id)
        except Exception:
            return

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing to do when a span ends."""

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered; always succeeds."""
        return True
