"""Where the two ids live in an OpenTelemetry ``Context``: the read and write primitives.

The scopes (:mod:`kilostar_otel.context`), the span processor, the propagators, the middlewares
and the logging integrations all read and write the ids through these functions, so each rule
(which baggage entry is a request id, how binding updates baggage) exists once.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context, create_key

from kilostar_otel import _w3c
from kilostar_otel._guard import internal_error
from kilostar_otel._internals import BAGGAGE_KEY, SPAN_KEY, current_context
from kilostar_otel._names import REQUEST_ID_BAGGAGE, TRACE_ID_ATTRIBUTE
from kilostar_otel.ids import is_valid_request_id

__all__ = [
    "BOUND_REQUEST_ID_KEY",
    "REQUEST_ID_VAR",
    "SEED_REQUEST_KEY",
    "SEED_TRACE_KEY",
    "TRACE_ID_KEY",
    "TRACE_ID_VAR",
    "baggage_of",
    "context_from_snapshot",
    "context_with_request_id",
    "context_with_trace_id",
    "current_request_id",
    "current_trace_id",
    "derive",
    "request_id_from",
    "seed_record",
    "snapshot_id",
    "trace_id_from",
    "with_own_ids",
]

#: The request id bound by this process (trusted as-is, like the seed's ContextVar). Baggage that
#: arrives from elsewhere is validated before it counts as a request id.
BOUND_REQUEST_ID_KEY: Final = create_key(REQUEST_ID_BAGGAGE)
#: The workflow trace id.
TRACE_ID_KEY: Final = create_key(TRACE_ID_ATTRIBUTE)

# The seed API (bind_*, the scopes, apply_snapshot) binds an id in two places: in its own
# ContextVar, exactly as the seed did (so its tokens are real ``contextvars.Token`` objects, and
# binds and resets interleaved with OpenTelemetry attach/detach behave as in the seed), and in the
# OpenTelemetry context (so spans, propagators and baggage see it). The context also records which
# seed bind made its id (a record under SEED_*_KEY). When a span closes or some other context is
# re-attached out of order, the two can disagree; the readers below settle it: an id the context
# got from anything else (a middleware, a workflow, a snapshot, a propagator) wins, and an id that
# came from a seed bind defers to the variable, which holds the seed's truth.

#: The seed's variables (their tokens are what ``bind_request_id``/``bind_trace_id`` return).
REQUEST_ID_VAR: Final[ContextVar[str]] = ContextVar("kilostar_request_id", default="")
TRACE_ID_VAR: Final[ContextVar[str]] = ContextVar("kilostar_trace_id", default="")
#: Context keys of the seed bind that set the context's id: a record made by :func:`seed_record`.
SEED_REQUEST_KEY: Final = create_key("seed request id")
SEED_TRACE_KEY: Final = create_key("seed trace id")

# A record is a tuple ``(value, thread)``, or for bind_request_id/bind_trace_id a list
# ``[value, thread, var_token, otel_token, context_id]`` whose last three let a reset in order
# undo the context attach exactly (the scopes keep those themselves).
VALUE, THREAD, VAR_TOKEN, OTEL_TOKEN, CONTEXT_ID = range(5)
_get_ident = threading.get_ident


def seed_record(value: str, var_token: object = None) -> list[Any]:
    """A new record of a seed bind of ``value`` in this thread (``bind_*``'s, with its token)."""
    return [value, _get_ident(), var_token, None, 0]


def with_own_ids(ctx: Context) -> Context:
    """``ctx`` marked as defining both ids itself (bound or not): the variables do not count.

    For a context that replaces everything current, such as a Ray call's (no leftovers of
    earlier calls in the worker).
    """
    return Context(
        {
            **ctx,
            SEED_REQUEST_KEY: (request_id_from(ctx), None),
            SEED_TRACE_KEY: (trace_id_from(ctx), None),
        }
    )


def _seed_value(record: Any, context_value: str, var: ContextVar[str]) -> str:
    """The current id when the context's value came from the seed bind ``record``."""
    thread = record[THREAD]
    if thread is None:  # a context with its own ids (with_own_ids)
        return context_value
    value = var.get()
    if value or thread == _get_ident():
        return value
    # The context came from another thread without the variable (a context carried by hand or by
    # OpenTelemetry's threading instrumentation): its value stands.
    return context_value


def current_request_id(ctx: Context | None = None) -> str:
    """The current request id: what :func:`kilostar_otel.get_request_id` returns.

    ``ctx`` is the current context when the caller has it already.
    """
    if ctx is None:
        ctx = current_context()
    record: Any = ctx.get(SEED_REQUEST_KEY)
    if record is not None:
        bag = ctx.get(BAGGAGE_KEY)
        value = record[VALUE]
        if (bag.get(REQUEST_ID_BAGGAGE, "") if type(bag) is dict else "") == value:
            return _seed_value(record, value, REQUEST_ID_VAR)
    # Not a seed bind's value (or none): the context wins; else what the seed bound.
    return request_id_from(ctx) or REQUEST_ID_VAR.get()


def current_trace_id(ctx: Context | None = None) -> str:
    """The current workflow trace id: what :func:`kilostar_otel.get_trace_id` returns."""
    if ctx is None:
        ctx = current_context()
    value = ctx.get(TRACE_ID_KEY)
    if type(value) is not str:
        value = ""
    record: Any = ctx.get(SEED_TRACE_KEY)
    if record is not None and record[VALUE] == value:
        return _seed_value(record, value, TRACE_ID_VAR)
    return value or TRACE_ID_VAR.get()


def snapshot_id(value: object) -> str | None:
    """A snapshot's id field as the seed applies it: any non-empty value, as ``str``."""
    if not value:
        return None
    return value if type(value) is str else str(value)


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


def context_with_request_id(ctx: Context, request_id: str, seed_record: Any = None) -> Context:
    """Return ``ctx`` with ``request_id`` bound (and in baggage); ``""`` unbinds it.

    ``seed_record``, when given, is stored as the context's seed record (see ``context.py``).
    """
    bag = ctx.get(BAGGAGE_KEY)
    if request_id:
        if not bag or type(bag) is not dict:
            new_bag = {REQUEST_ID_BAGGAGE: request_id}
        elif bag.get(REQUEST_ID_BAGGAGE) == request_id:
            new_bag = bag  # already there (extracted from the same request): dicts are shared
        else:
            new_bag = {**bag, REQUEST_ID_BAGGAGE: request_id}
    else:
        new_bag = dict(bag) if bag and type(bag) is dict else {}
        new_bag.pop(REQUEST_ID_BAGGAGE, None)
    if seed_record is None:
        return Context({**ctx, BAGGAGE_KEY: new_bag, BOUND_REQUEST_ID_KEY: request_id})
    return Context(
        {
            **ctx,
            BAGGAGE_KEY: new_bag,
            BOUND_REQUEST_ID_KEY: request_id,
            SEED_REQUEST_KEY: seed_record,
        }
    )


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
        # The ids were bound by the process that took the snapshot: any string is kept exactly.
        request_id = snapshot_id(snap.get("request_id"))
        if request_id is not None:
            bag = dict(baggage_of(base)) if bag is None else bag
            bag[REQUEST_ID_BAGGAGE] = request_id
            updates[BOUND_REQUEST_ID_KEY] = request_id
        if bag is not None:
            updates[BAGGAGE_KEY] = bag
        trace_id = snapshot_id(snap.get("trace_id"))
        if trace_id is not None:
            updates[TRACE_ID_KEY] = trace_id
        return derive(base, updates) if updates else None
    except Exception as exc:
        internal_error("context_from_snapshot", exc)
        return None
