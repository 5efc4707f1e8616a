"""The two ids, ``request_id`` and ``trace_id``, kept in the OpenTelemetry context.

Both ids live in the current OpenTelemetry :class:`~opentelemetry.context.Context`, so one attach
binds an id, spans and propagators see it, and anything that carries the OTel context (asyncio
tasks, :func:`wrap`, :func:`snapshot`) carries the ids too. The request id is also the W3C baggage
entry ``kilostar.request_id``: there is one truth, readable with ``baggage.get_baggage``.

The seed API (``get_request_id``, ``bind_request_id``, ``request_id_scope``, ``snapshot``, ...)
keeps its names and semantics.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context

from kilostar_otel import _w3c
from kilostar_otel._idcontext import (
    BOUND_REQUEST_ID_KEY,
    TRACE_ID_KEY,
    baggage_of,
    context_with_request_id,
    context_with_trace_id,
    derive,
    trace_id_from,
)

# Re-exported for workflow.py and integrations/ray.py until they import from _idcontext.
from kilostar_otel._idcontext import context_from_snapshot as context_from_snapshot
from kilostar_otel._idcontext import request_id_from as request_id_from
from kilostar_otel._internals import BAGGAGE_KEY as OTEL_BAGGAGE_KEY
from kilostar_otel._internals import attach_context, current_context, reset_context
from kilostar_otel._names import REQUEST_ID_BAGGAGE
from kilostar_otel.ids import new_request_id

__all__ = [
    "BAGGAGE_KEY",
    "IdToken",
    "apply_snapshot",
    "bind_request_id",
    "bind_trace_id",
    "get_request_id",
    "get_trace_id",
    "new_request_id",
    "request_id_scope",
    "reset_request_id",
    "reset_trace_id",
    "snapshot",
    "trace_id_scope",
    "wrap",
]

#: W3C baggage entry that carries the request id.
BAGGAGE_KEY = REQUEST_ID_BAGGAGE

# Names other modules imported from here before the primitives moved to _idcontext/_internals;
# kept until workflow.py and integrations/ray.py import from there (see docs/architecture.md).
_BOUND_REQUEST_ID_KEY = BOUND_REQUEST_ID_KEY
_TRACE_ID_KEY = TRACE_ID_KEY
_get_current = current_context
_attach = attach_context
_reset_var = reset_context

_F = TypeVar("_F", bound=Callable[..., Any])


def get_request_id(context: Context | None = None) -> str:
    """Return the current ``request_id``, or ``""`` when none is bound.

    A request id bound in this process wins; otherwise a valid ``kilostar.request_id`` baggage
    entry (for example one extracted by the W3C baggage propagator) is returned.
    """
    return request_id_from(current_context() if context is None else context)


def get_trace_id(context: Context | None = None) -> str:
    """Return the current workflow ``trace_id``, or ``""`` when none is bound."""
    value = (current_context() if context is None else context).get(TRACE_ID_KEY)
    return value if type(value) is str else ""


def _undo(otel_token: contextvars.Token[Context], attached: Context, is_request: bool) -> None:
    """Undo one bind: exactly when nothing was attached since, else restore only that id."""
    current = current_context()
    if current is attached:
        # Raises ValueError in another thread or task and RuntimeError on reuse, as the seed did.
        otel_token.var.reset(otel_token)
        return
    previous = otel_token.old_value
    if not isinstance(previous, Context):
        previous = Context()
    if is_request:
        old_entry = baggage_of(previous).get(REQUEST_ID_BAGGAGE)
        bag = dict(baggage_of(current))
        if old_entry is None:
            bag.pop(REQUEST_ID_BAGGAGE, None)
        else:
            bag[REQUEST_ID_BAGGAGE] = old_entry
        updates = {
            OTEL_BAGGAGE_KEY: bag,
            BOUND_REQUEST_ID_KEY: previous.get(BOUND_REQUEST_ID_KEY),
        }
    else:
        updates = {TRACE_ID_KEY: previous.get(TRACE_ID_KEY)}
    target = derive(current, updates)
    otel_token.var.reset(otel_token)
    attach_context(target)


class IdToken:
    """Restores an id to its previous value; returned by :func:`bind_request_id` and friends.

    Pass it to the matching ``reset_*`` function once, in the same thread or task (as with
    :class:`contextvars.Token`). Resets may come in any order: each restores only its own id.
    """

    __slots__ = ("_attached", "_is_request", "_otel_token")

    def __init__(
        self, otel_token: contextvars.Token[Context], attached: Context, is_request: bool
    ) -> None:
        self._otel_token = otel_token
        self._attached = attached
        self._is_request = is_request

    def _reset(self) -> None:
        _undo(self._otel_token, self._attached, self._is_request)


def _coerce(value: object) -> str:
    return value if type(value) is str else ("" if value is None else str(value))


def bind_request_id(request_id: str) -> IdToken:
    """Bind ``request_id`` in the current context; return a token for :func:`reset_request_id`.

    The id also becomes the baggage entry ``kilostar.request_id``. Prefer
    :func:`request_id_scope`, which resets for you.
    """
    if type(request_id) is not str:
        request_id = _coerce(request_id)
    ctx = context_with_request_id(current_context(), request_id)
    return IdToken(attach_context(ctx), ctx, True)


def bind_trace_id(trace_id: str) -> IdToken:
    """Bind ``trace_id`` in the current context; return a token for :func:`reset_trace_id`."""
    if type(trace_id) is not str:
        trace_id = _coerce(trace_id)
    ctx = context_with_trace_id(current_context(), trace_id)
    return IdToken(attach_context(ctx), ctx, False)


def reset_request_id(token: IdToken) -> None:
    """Restore the request id that was current before the matching :func:`bind_request_id`."""
    token._reset()


def reset_trace_id(token: IdToken) -> None:
    """Restore the trace id that was current before the matching :func:`bind_trace_id`."""
    token._reset()


class _RequestIdScope:
    """``with request_id_scope(rid):`` -- one context attach on enter, one reset on exit."""

    __slots__ = ("_attached", "_token", "_value")

    def __init__(self, value: str) -> None:
        self._value = value

    def __enter__(self) -> str:
        value = self._value
        if type(value) is not str:
            value = self._value = _coerce(value)
        ctx = context_with_request_id(current_context(), value)
        self._attached = ctx
        self._token = attach_context(ctx)
        return value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if current_context() is self._attached:
            reset_context(self._token)
        else:
            _undo(self._token, self._attached, True)


class _TraceIdScope(_RequestIdScope):
    """``with trace_id_scope(tid):``."""

    __slots__ = ()

    def __enter__(self) -> str:
        value = self._value
        if type(value) is not str:
            value = self._value = _coerce(value)
        ctx = self._attached = context_with_trace_id(current_context(), value)
        self._token = attach_context(ctx)
        return value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _undo(self._token, self._attached, False)


def request_id_scope(request_id: str) -> _RequestIdScope:
    """Bind ``request_id`` for a ``with`` block and restore the previous one on exit."""
    return _RequestIdScope(request_id)


def trace_id_scope(trace_id: str) -> _TraceIdScope:
    """Bind ``trace_id`` for a ``with`` block and restore the previous one on exit."""
    return _TraceIdScope(trace_id)


# --- snapshots ---------------------------------------------------------------------------------


def snapshot() -> dict[str, str]:
    """Return the current ids and W3C carrier as a flat, JSON- and pickle-safe ``dict[str, str]``.

    Keys: ``request_id``, ``trace_id`` (``""`` when unbound), plus ``traceparent``, ``tracestate``
    and ``baggage`` when the current context has them. Pass it across a process boundary and
    re-enter it there with :func:`apply_snapshot`.
    """
    ctx = current_context()
    snap = {"request_id": request_id_from(ctx), "trace_id": trace_id_from(ctx)}
    span_context = trace.get_current_span(ctx).get_span_context()
    if span_context.is_valid:
        snap["traceparent"] = _w3c.format_traceparent(span_context)
        if span_context.trace_state:
            snap["tracestate"] = span_context.trace_state.to_header()
    bag = baggage_of(ctx)
    if bag:
        header = _w3c.format_baggage(bag)
        if header:
            snap["baggage"] = header
    return snap


class apply_snapshot:  # noqa: N801 - the seed's name, used as ``with apply_snapshot(snap):``
    """Make a :func:`snapshot` current for a ``with`` block: ids, parent span and baggage.

    Spans started inside are children of the snapshot's span (same trace). Accepts the seed's
    two-key dicts, ``None`` and ``{}``; wrong types and malformed fields are ignored, never raised.
    """

    __slots__ = ("_snap", "_token")

    def __init__(self, snap: Mapping[str, str] | None) -> None:
        self._snap = snap
        self._token: contextvars.Token[Context] | None = None

    def __enter__(self) -> None:
        ctx = context_from_snapshot(self._snap, current_context())
        self._token = None if ctx is None else attach_context(ctx)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            try:
                token.var.reset(token)
            except (ValueError, RuntimeError):
                # The token belongs to another context (e.g. a generator resumed elsewhere): the
                # context we are in now was never changed by us, so there is nothing to undo.
                pass


def wrap(fn: _F) -> _F:
    """Return ``fn`` bound to the current context: ids, OTel context and every other ContextVar.

    Use it to hand work to a thread (``threading.Thread(target=wrap(fn))``, ``executor.submit``).
    Each call runs in its own copy, so the wrapped function may run in several threads at once.
    """
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return captured.copy().run(fn, *args, **kwargs)

    return run  # type: ignore[return-value]
