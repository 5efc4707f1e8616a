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
from typing import Any, Final, TypeVar

from opentelemetry import trace
from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.context import _RUNTIME_CONTEXT, Context, attach, create_key, get_current
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace.propagation import _SPAN_KEY

from kilostar_otel import _w3c
from kilostar_otel.ids import is_valid_request_id, new_request_id

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
BAGGAGE_KEY: Final = "kilostar.request_id"

# The request id bound by this process (trusted as-is, like the seed's ContextVar). Baggage that
# arrives from elsewhere is validated before it counts as a request id.
_BOUND_REQUEST_ID_KEY: Final = create_key("kilostar.request_id")
_TRACE_ID_KEY: Final = create_key("kilostar.trace_id")

_F = TypeVar("_F", bound=Callable[..., Any])


# The OTel runtime context is a ContextVar: use it directly on the hot paths (one call instead of
# three); any other runtime context configured through OTEL_PYTHON_CONTEXT goes through the API.
if type(_RUNTIME_CONTEXT) is ContextVarsRuntimeContext:
    _get_current: Callable[[], Context] = _RUNTIME_CONTEXT._current_context.get
    _reset_var: Callable[[contextvars.Token[Context]], None] = (
        _RUNTIME_CONTEXT._current_context.reset
    )
    _attach: Callable[[Context], contextvars.Token[Context]] = _RUNTIME_CONTEXT._current_context.set
else:  # pragma: no cover - only with a custom OTEL_PYTHON_CONTEXT
    _get_current = get_current
    _attach = attach

    def _reset_var(token: contextvars.Token[Context]) -> None:
        token.var.reset(token)


def _derive(ctx: Context, updates: Mapping[str, object]) -> Context:
    """Return a copy of ``ctx`` with ``updates`` applied (a value of None removes the key)."""
    values = dict(ctx)
    for key, value in updates.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return Context(values)


def _baggage_of(ctx: Context) -> dict[str, object]:
    bag = ctx.get(_BAGGAGE_KEY)
    return bag if type(bag) is dict else {}


def request_id_from(ctx: Context) -> str:
    """Return the request id held by ``ctx``: bound here, or valid baggage from elsewhere."""
    bag = ctx.get(_BAGGAGE_KEY)
    if bag and type(bag) is dict:
        value = bag.get(BAGGAGE_KEY)
        if value is not None and (
            value == ctx.get(_BOUND_REQUEST_ID_KEY) or is_valid_request_id(value)
        ):
            return value if type(value) is str else str(value)
    return ""


def trace_id_from(ctx: Context) -> str:
    """Return the workflow trace id held by ``ctx``, or ``""``."""
    value = ctx.get(_TRACE_ID_KEY)
    return value if type(value) is str else ""


def context_with_request_id(ctx: Context, request_id: str) -> Context:
    """Return ``ctx`` with ``request_id`` bound (and in baggage); ``""`` unbinds it."""
    bag = ctx.get(_BAGGAGE_KEY)
    if request_id:
        new_bag = (
            {**bag, BAGGAGE_KEY: request_id}
            if bag and type(bag) is dict
            else {BAGGAGE_KEY: request_id}
        )
    else:
        new_bag = dict(bag) if bag and type(bag) is dict else {}
        new_bag.pop(BAGGAGE_KEY, None)
    return Context({**ctx, _BAGGAGE_KEY: new_bag, _BOUND_REQUEST_ID_KEY: request_id})


def _context_with_trace_id(ctx: Context, trace_id: str) -> Context:
    return Context({**ctx, _TRACE_ID_KEY: trace_id})


def get_request_id(context: Context | None = None) -> str:
    """Return the current ``request_id``, or ``""`` when none is bound.

    A request id bound in this process wins; otherwise a valid ``kilostar.request_id`` baggage
    entry (for example one extracted by the W3C baggage propagator) is returned.
    """
    return request_id_from(_get_current() if context is None else context)


def get_trace_id(context: Context | None = None) -> str:
    """Return the current workflow ``trace_id``, or ``""`` when none is bound."""
    value = (_get_current() if context is None else context).get(_TRACE_ID_KEY)
    return value if type(value) is str else ""


def _undo(otel_token: contextvars.Token[Context], attached: Context, is_request: bool) -> None:
    """Undo one bind: exactly when nothing was attached since, else restore only that id."""
    current = _get_current()
    if current is attached:
        # Raises ValueError in another thread or task and RuntimeError on reuse, as the seed did.
        otel_token.var.reset(otel_token)
        return
    previous = otel_token.old_value
    if not isinstance(previous, Context):
        previous = Context()
    if is_request:
        old_entry = _baggage_of(previous).get(BAGGAGE_KEY)
        bag = dict(_baggage_of(current))
        if old_entry is None:
            bag.pop(BAGGAGE_KEY, None)
        else:
            bag[BAGGAGE_KEY] = old_entry
        updates = {_BAGGAGE_KEY: bag, _BOUND_REQUEST_ID_KEY: previous.get(_BOUND_REQUEST_ID_KEY)}
    else:
        updates = {_TRACE_ID_KEY: previous.get(_TRACE_ID_KEY)}
    target = _derive(current, updates)
    otel_token.var.reset(otel_token)
    _attach(target)


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
    ctx = context_with_request_id(_get_current(), request_id)
    return IdToken(_attach(ctx), ctx, True)


def bind_trace_id(trace_id: str) -> IdToken:
    """Bind ``trace_id`` in the current context; return a token for :func:`reset_trace_id`."""
    if type(trace_id) is not str:
        trace_id = _coerce(trace_id)
    ctx = _context_with_trace_id(_get_current(), trace_id)
    return IdToken(_attach(ctx), ctx, False)


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
        # context_with_request_id(), inlined: this runs on every request.
        value = self._value
        current = _get_current()
        bag = current.get(_BAGGAGE_KEY)
        if value and type(value) is str:
            new_bag = (
                {**bag, BAGGAGE_KEY: value} if bag and type(bag) is dict else {BAGGAGE_KEY: value}
            )
            ctx = Context({**current, _BAGGAGE_KEY: new_bag, _BOUND_REQUEST_ID_KEY: value})
        else:
            value = self._value = _coerce(value)
            ctx = context_with_request_id(current, value)
        self._attached = ctx
        self._token = _attach(ctx)
        return value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if _get_current() is self._attached:
            _reset_var(self._token)
        else:
            _undo(self._token, self._attached, True)


class _TraceIdScope(_RequestIdScope):
    """``with trace_id_scope(tid):``."""

    __slots__ = ()

    def __enter__(self) -> str:
        value = self._value
        if type(value) is not str:
            value = self._value = _coerce(value)
        ctx = self._attached = _context_with_trace_id(_get_current(), value)
        self._token = _attach(ctx)
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
    ctx = _get_current()
    snap = {"request_id": request_id_from(ctx), "trace_id": trace_id_from(ctx)}
    span_context = trace.get_current_span(ctx).get_span_context()
    if span_context.is_valid:
        snap["traceparent"] = _w3c.format_traceparent(span_context)
        if span_context.trace_state:
            snap["tracestate"] = span_context.trace_state.to_header()
    bag = _baggage_of(ctx)
    if bag:
        header = _w3c.format_baggage(bag)
        if header:
            snap["baggage"] = header
    return snap


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
            updates[_SPAN_KEY] = trace.NonRecordingSpan(span_context)
        baggage_header = snap.get("baggage")
        bag: dict[str, object] | None = None
        if type(baggage_header) is str:
            bag = dict(_w3c.parse_baggage(baggage_header)) or None
        request_id = snap.get("request_id")
        if is_valid_request_id(request_id):
            bag = dict(_baggage_of(base)) if bag is None else bag
            bag[BAGGAGE_KEY] = request_id
            updates[_BOUND_REQUEST_ID_KEY] = request_id
        if bag is not None:
            updates[_BAGGAGE_KEY] = bag
        trace_id = snap.get("trace_id")
        if is_valid_request_id(trace_id):
            updates[_TRACE_ID_KEY] = trace_id
        return _derive(base, updates) if updates else None
    except Exception:
        return None


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
        ctx = context_from_snapshot(self._snap, _get_current())
        self._token = None if ctx is None else _attach(ctx)

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
