"""The two ids, ``request_id`` and ``trace_id``: the seed's API, bridged to OpenTelemetry.

Binding an id sets it where the seed kept it, in a ``ContextVar`` of its own (so the tokens are
real :class:`contextvars.Token` objects and binds, resets and scopes behave exactly as in the
seed, also when they interleave with spans), and in the current OpenTelemetry
:class:`~opentelemetry.context.Context`, so spans, propagators and anything that carries the OTel
context see it. The request id is also the W3C baggage entry ``kilostar.request_id``, readable
with ``baggage.get_baggage``.

The seed API (``get_request_id``, ``bind_request_id``, ``request_id_scope``, ``snapshot``, ...)
keeps its names and semantics; ``docs/migration.md`` lists the few deliberate differences.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context

from kilostar_otel import _w3c
from kilostar_otel._idcontext import (
    CONTEXT_ID,
    OTEL_TOKEN,
    REQUEST_ID_VAR,
    SEED_REQUEST_KEY,
    SEED_TRACE_KEY,
    TRACE_ID_KEY,
    TRACE_ID_VAR,
    VAR_TOKEN,
    baggage_of,
    context_from_snapshot,
    current_request_id,
    current_trace_id,
    request_id_from,
    seed_record,
    snapshot_id,
    trace_id_from,
)
from kilostar_otel._idcontext import context_with_request_id as context_with_request_id
from kilostar_otel._internals import attach_context, current_context, reset_context
from kilostar_otel._names import REQUEST_ID_BAGGAGE
from kilostar_otel.ids import new_request_id

__all__ = [
    "BAGGAGE_KEY",
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

_F = TypeVar("_F", bound=Callable[..., Any])
_set_request_var = REQUEST_ID_VAR.set
_reset_request_var = REQUEST_ID_VAR.reset


def get_request_id(context: Context | None = None) -> str:
    """Return the current ``request_id``, or ``""`` when none is bound.

    A request id bound in this process wins; otherwise a valid ``kilostar.request_id`` baggage
    entry (for example one extracted by the W3C baggage propagator) is returned. With
    ``context``, the id that context holds.
    """
    return current_request_id() if context is None else request_id_from(context)


def get_trace_id(context: Context | None = None) -> str:
    """Return the current workflow ``trace_id``, or ``""`` when none is bound."""
    return current_trace_id() if context is None else trace_id_from(context)


def _coerce(value: object) -> str:
    return value if type(value) is str else ("" if value is None else str(value))


def _request_context(ctx: Context, value: str, record: list[Any]) -> Context:
    """``ctx`` with ``value`` as the bound request id (and baggage entry), made by ``record``."""
    return context_with_request_id(ctx, value, record)


def _trace_context(ctx: Context, value: str, record: list[Any]) -> Context:
    return Context({**ctx, TRACE_ID_KEY: value, SEED_TRACE_KEY: record})


def _bind(
    var: ContextVar[str], make: Callable[[Context, str, list[Any]], Context], value: str
) -> Token[str]:
    token = var.set(value)
    record = seed_record(value, token)
    ctx = make(current_context(), value, record)
    record[OTEL_TOKEN] = attach_context(ctx)
    record[CONTEXT_ID] = id(ctx)
    return token


def _reset(
    var: ContextVar[str],
    key: str,
    make: Callable[[Context, str, list[Any]], Context],
    token: Token[str],
) -> None:
    # The seed's reset, with the seed's errors: TypeError for something that is not a token,
    # ValueError for a token of the other id or from another thread or task, RuntimeError on reuse.
    var.reset(token)
    current = current_context()
    record: Any = current.get(key)
    if type(record) is list and record[VAR_TOKEN] is token and record[CONTEXT_ID] == id(current):
        reset_context(record[OTEL_TOKEN])  # nothing was attached since the bind: undo it exactly
        return
    _follow(var, make)


def _follow(var: ContextVar[str], make: Callable[[Context, str, list[Any]], Context]) -> None:
    """After a reset out of order with other attaches (a span, another scope): make the current
    OpenTelemetry context follow the variable, keeping everything else that is current now."""
    value = var.get()
    attach_context(make(current_context(), value, seed_record(value)))


def bind_request_id(request_id: str) -> Token[str]:
    """Bind ``request_id`` in the current context; return a token for :func:`reset_request_id`.

    The token is a :class:`contextvars.Token`, as in the seed. The id also becomes the baggage
    entry ``kilostar.request_id``. Prefer :func:`request_id_scope`, which resets for you.
    """
    if type(request_id) is not str:
        request_id = _coerce(request_id)
    return _bind(REQUEST_ID_VAR, _request_context, request_id)


def bind_trace_id(trace_id: str) -> Token[str]:
    """Bind ``trace_id`` in the current context; return a token for :func:`reset_trace_id`."""
    if type(trace_id) is not str:
        trace_id = _coerce(trace_id)
    return _bind(TRACE_ID_VAR, _trace_context, trace_id)


def reset_request_id(token: Token[str]) -> None:
    """Restore the request id that was current before the matching :func:`bind_request_id`."""
    _reset(REQUEST_ID_VAR, SEED_REQUEST_KEY, _request_context, token)


def reset_trace_id(token: Token[str]) -> None:
    """Restore the trace id that was current before the matching :func:`bind_trace_id`."""
    _reset(TRACE_ID_VAR, SEED_TRACE_KEY, _trace_context, token)


class _Scope:
    """A bind for a ``with`` block, or for each call of a decorated function (like the seed's)."""

    __slots__ = ("_attached", "_otel_token", "_token", "_value")

    def __init__(self, value: str) -> None:
        self._value = value

    def __enter__(self) -> str:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        raise NotImplementedError

    def __call__(self, fn: _F) -> _F:
        """Use the scope as a decorator: each call binds the id for the call's duration."""

        @functools.wraps(fn)
        def scoped(*args: Any, **kwargs: Any) -> Any:
            with type(self)(self._value):
                return fn(*args, **kwargs)

        return scoped  # type: ignore[return-value]


class _RequestIdScope(_Scope):
    """``with request_id_scope(rid):`` -- a bind on enter, its reset on exit."""

    __slots__ = ()

    def __enter__(self) -> str:
        # This runs on every request: the variable and the context, set directly. A scope's
        # context needs no seed record (see _idcontext): it is current exactly while the scope
        # is, so its id stands; the variable keeps binds and resets inside the block seed-exact.
        value = self._value
        if type(value) is not str:
            value = self._value = _coerce(value)
        self._token = _set_request_var(value)
        ctx = self._attached = context_with_request_id(current_context(), value)
        self._otel_token = attach_context(ctx)
        return value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _reset_request_var(self._token)  # the seed's errors, as in _reset
        if current_context() is self._attached:
            reset_context(self._otel_token)
        else:
            _follow(REQUEST_ID_VAR, _request_context)


class _TraceIdScope(_Scope):
    """``with trace_id_scope(tid):``."""

    __slots__ = ()

    def __enter__(self) -> str:
        value = self._value
        if type(value) is not str:
            value = self._value = _coerce(value)
        self._token = TRACE_ID_VAR.set(value)
        ctx = self._attached = Context({**current_context(), TRACE_ID_KEY: value})
        self._otel_token = attach_context(ctx)
        return value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        TRACE_ID_VAR.reset(self._token)
        if current_context() is self._attached:
            reset_context(self._otel_token)
        else:
            _follow(TRACE_ID_VAR, _trace_context)


def request_id_scope(request_id: str) -> _RequestIdScope:
    """Bind ``request_id`` for a ``with`` block and restore the previous one on exit.

    Also a decorator, as the seed's was: ``@request_id_scope("req-1")`` binds it for each call.
    """
    return _RequestIdScope(request_id)


def trace_id_scope(trace_id: str) -> _TraceIdScope:
    """Bind ``trace_id`` for a ``with`` block and restore the previous one on exit (or decorate)."""
    return _TraceIdScope(trace_id)


# --- snapshots ---------------------------------------------------------------------------------


def snapshot() -> dict[str, str]:
    """Return the current ids and W3C carrier as a flat, JSON- and pickle-safe ``dict[str, str]``.

    Keys: ``request_id``, ``trace_id`` (``""`` when unbound), plus ``traceparent``, ``tracestate``
    and ``baggage`` when the current context has them. Pass it across a process boundary and
    re-enter it there with :func:`apply_snapshot`.
    """
    ctx = current_context()
    request_id = current_request_id()
    snap = {"request_id": request_id, "trace_id": current_trace_id()}
    span_context = trace.get_current_span(ctx).get_span_context()
    if span_context.is_valid:
        snap["traceparent"] = _w3c.format_traceparent(span_context)
        if span_context.trace_state:
            snap["tracestate"] = span_context.trace_state.to_header()
    bag = baggage_of(ctx)
    if bag.get(REQUEST_ID_BAGGAGE, "") != request_id:
        bag = dict(bag)  # the context's entry is stale (see _idcontext): the id is the truth
        if request_id:
            bag[REQUEST_ID_BAGGAGE] = request_id
        else:
            bag.pop(REQUEST_ID_BAGGAGE, None)
    if bag:
        header = _w3c.format_baggage(bag)
        if header:
            snap["baggage"] = header
    return snap


class apply_snapshot:  # noqa: N801 - the seed's name, used as ``with apply_snapshot(snap):``
    """Make a :func:`snapshot` current for a ``with`` block: ids, parent span and baggage.

    Spans started inside are children of the snapshot's span (same trace). Accepts the seed's
    two-key dicts, ``None`` and ``{}``; ids of any string are bound exactly (non-``str`` ones as
    ``str``); wrong types and malformed fields are ignored, never raised. Also a decorator.
    """

    __slots__ = ("_snap", "_token", "_var_tokens")

    def __init__(self, snap: Mapping[str, str] | None) -> None:
        self._snap = snap
        self._token: contextvars.Token[Context] | None = None
        self._var_tokens: list[Token[str]] = []

    def __enter__(self) -> None:
        snap = self._snap
        ctx = context_from_snapshot(snap, current_context())
        if ctx is None:
            return
        assert isinstance(snap, Mapping)  # context_from_snapshot returns None otherwise
        updates: dict[str, object] = {}
        # As the seed did, the ids are bound in its variables too (see bind_request_id).
        request_id = snapshot_id(snap.get("request_id"))
        if request_id is not None:
            token = REQUEST_ID_VAR.set(request_id)
            self._var_tokens.append(token)
            updates[SEED_REQUEST_KEY] = seed_record(request_id, token)
        trace_id = snapshot_id(snap.get("trace_id"))
        if trace_id is not None:
            token = TRACE_ID_VAR.set(trace_id)
            self._var_tokens.append(token)
            updates[SEED_TRACE_KEY] = seed_record(trace_id, token)
        if updates:
            ctx = Context({**ctx, **updates})
        self._token = attach_context(ctx)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        tokens, self._var_tokens = self._var_tokens, []
        if token is not None:
            try:
                token.var.reset(token)
            except (ValueError, RuntimeError):
                # The token belongs to another context (e.g. a generator resumed elsewhere): the
                # context we are in now was never changed by us, so there is nothing to undo.
                pass
        for var_token in reversed(tokens):
            try:
                var_token.var.reset(var_token)
            except (ValueError, RuntimeError):
                pass  # as the seed: a token of another context is tolerated

    def __call__(self, fn: _F) -> _F:
        """Use it as a decorator, as the seed's allowed: each call runs inside the snapshot."""
        snap = self._snap

        @functools.wraps(fn)
        def applied(*args: Any, **kwargs: Any) -> Any:
            with apply_snapshot(snap):
                return fn(*args, **kwargs)

        return applied  # type: ignore[return-value]


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
