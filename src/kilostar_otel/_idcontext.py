"""Where the two ids live in an OpenTelemetry ``Context``: the read and write primitives.

The scopes (:mod:`kilostar_otel.context`), the span processor, the propagators, the middlewares
and the logging integrations all read and write the ids through these functions, so each rule
(which baggage entry is a request id, how binding updates baggage) exists once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context, create_key

from kilostar_otel import _w3c
from kilostar_otel._guard import internal_error
from kilostar_otel._internals import BAGGAGE_KEY, SPAN_KEY
from kilostar_otel._names import REQUEST_ID_BAGGAGE, TRACE_ID_ATTRIBUTE
from kilostar_otel.ids import is_valid_request_id

__all__ = [
    "BOUND_REQUEST_ID_KEY",
    "TRACE_ID_KEY",
    "baggage_of",
    "context_from_snapshot",
    "context_with_request_id",
    "context_with_trace_id",
    "derive",
    "request_id_from",
    "trace_id_from",
]

#: The request id bound by this process (trusted as-is, like the seed's ContextVar). Baggage that
#: arrives from elsewhere is validated before it counts as a request id.
BOUND_REQUEST_ID_KEY: Final = create_key(REQUEST_ID_BAGGAGE)
#: The workflow trace id.
TRACE_ID_KEY: Final = create_key(TRACE_ID_ATTRIBUTE)


def derive(ctx: Context, updates: Mapping[str, object]) -> Context:
    """Return a copy of ``ctx`` with ``updates`` applied (a value of None removes the key)."""
    values = dict(ctx)
    for key, value in updates.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return Context(values)


def baggage_of(ctx: Context) -> dict[str, object]:
    """The baggage entries of ``ctx`` (the dict itself: copy before changing it)."""
    bag = ctx.get(BAGGAGE_KEY)
    return bag if type(bag) is dict else {}


def request_id_from(ctx: Context) -> str:
    """Return the request id held by ``ctx``: bound here, or valid baggage from elsewhere."""
    bag = ctx.get(BAGGAGE_KEY)
    if bag and type(bag) is dict:
        value = bag.get(REQUEST_ID_BAGGAGE)
        if value is not None and (
            value == ctx.get(BOUND_REQUEST_ID_KEY) or is_valid_request_id(value)
        ):
            return value if type(value) is str else str(value)
    return ""


def trace_id_from(ctx: Context) -> str:
    """Return the workflow trace id held by ``ctx``, or ``""``."""
    value = ctx.get(TRACE_ID_KEY)
    return value if type(value) is str else ""


def context_with_request_id(ctx: Context, request_id: str) -> Context:
    """Return ``ctx`` with ``request_id`` bound (and in baggage); ``""`` unbinds it."""
    bag = ctx.get(BAGGAGE_KEY)
    if request_id:
        new_bag = (
            {**bag, REQUEST_ID_BAGGAGE: request_id}
            if bag and type(bag) is dict
            else {REQUEST_ID_BAGGAGE: request_id}
        )
    else:
        new_bag = dict(bag) if bag and type(bag) is dict else {}
        new_bag.pop(REQUEST_ID_BAGGAGE, None)
    return Context({**ctx, BAGGAGE_KEY: new_bag, BOUND_REQUEST_ID_KEY: request_id})


def context_with_trace_id(ctx: Context, trace_id: str) -> Context:
    """Return ``ctx`` with the workflow ``trace_id`` bound."""
    return Context({**ctx, TRACE_ID_KEY: trace_id})


def context_from_snapshot(snap: object, base: Context) -> Context | None:
    """Return ``base`` updated from a snapshot, or None when the snapshot holds nothing usable.

    Every field is checked on its own; a field of the wrong type or shape is ignored.
    """
    try:
        if not isinstance(snap, Mapping) or not snap:
            return None
        updates: dict[str, object] = {}
        span_context = _w3c.parse_traceparent(snap.get("traceparent"))
        if span_context is not None:
            trace_state = _w3c.parse_tracestate([snap.get("tracestate")])
            if trace_state is not None:
                span_context = trace.SpanContext(
                    span_context.trace_id,
                    span_context.span_id,
                    is_remote=True,
                    trace_flags=span_context.trace_flags,
                    trace_state=trace_state,
                )
            updates[SPAN_KEY] = trace.NonRecordingSpan(span_context)
        baggage_header = snap.get("baggage")
        bag: dict[str, object] | None = None
        if type(baggage_header) is str:
            bag = dict(_w3c.parse_baggage(baggage_header)) or None
        request_id = snap.get("request_id")
        if is_valid_request_id(request_id):
            bag = dict(baggage_of(base)) if bag is None else bag
            bag[REQUEST_ID_BAGGAGE] = request_id
            updates[BOUND_REQUEST_ID_KEY] = request_id
        if bag is not None:
            updates[BAGGAGE_KEY] = bag
        trace_id = snap.get("trace_id")
        if is_valid_request_id(trace_id):
            updates[TRACE_ID_KEY] = trace_id
        return derive(base, updates) if updates else None
    except Exception as exc:
        internal_error("context_from_snapshot", exc)
        return None
