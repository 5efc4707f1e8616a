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
from opentelemetry.context import Context, attach, create_key, get_current
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
    return bag if isinstance(bag, dict) else {}


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
    bag = dict(_baggage_of(ctx))
    if request_id:
        bag[BAGGAGE_KEY] = request_id
    else:
        bag.pop(BAGGAGE_KEY, None)
    return _derive(ctx, {_BAGGAGE_KEY: bag, _BOUND_REQUEST_ID_KEY: request_id})


def get_request_id(context: Context | None = None) -> str:
    """Return the current ``request_id``, or ``""`` when none is bound.

    A request id bound in this process wins; otherwise a valid ``kilostar.request_id`` baggage
    entry (for example one extracted by the W3C baggage propagator) is returned.
    """
    return request_id_from(get_current() if context is None else context)


def get_trace_id(context: Context | None = None) -> str:
    """Return the current workflow ``trace_id``, or ``""`` when none is bound."""
    value = (get_current() if context is None else context).get(_TRACE_ID_KEY)
    return value if type(value) is str else ""


class IdToken:
    """Restores an id to its previous value; returned by :func:`bind_request_id` and friends.

    Pass it to the matching ``reset_*`` function once, in the same thread or task (as with
    :class:`contextvars.Token`). Resets may come in any order: each restores only its own id.
    """

    __slots__ = ("_attached", "_otel_token", "_restore", "_used")

    def __init__(
        self,
        otel_token: contextvars.Token[Context],
        attached: Context,
        restore: Mapping[str, object],
    ) -> None:
        self._otel_token = otel_token
        self._attached = attached
        self._restore = restore
        self._used = False

    def _reset(self) -> None:
        if self._used:
            raise RuntimeError("this token has already been used once")
        current = get_current()
        if current is self._attached:
            # Nothing was attached since: undo exactly, raising ValueError across contexts.
            self._otel_token.var.reset(self._otel_token)
        else:
            # Something else was attached on top: restore only our own id inside it.
            restore = dict(self._restore)
            if _BAGGAGE_KEY in restore:
                bag = dict(_baggage_of(current))
                old = restore[_BAGGAGE_KEY]
                if old is None:
                    bag.pop(BAGGAGE_KEY, None)
                else:
                    bag[BAGGAGE_KEY] = old
                restore[_BAGGAGE_KEY] = bag
            target = _derive(current, restore)
            # Raises ValueError, like the seed's ContextVar, when used in another thread or task.
            self._otel_token.var.reset(self._otel_token)
            attach(target)
        self._used = True


def _coerce(value: object) -> str:
    return value if type(value) is str else ("" if value is None else str(value))


def bind_request_id(request_id: str) -> IdToken:
    """Bind ``request_id`` in the current context; return a token for :func:`reset_request_id`.

    The id also becomes the baggage entry ``kilostar.request_id``. Prefer
    :func:`request_id_scope`, which resets for you.
    """
    current = get_current()
    request_id = _coerce(request_id)
    restore = {
        _BOUND_REQUEST_ID_KEY: current.get(_BOUND_REQUEST_ID_KEY),
        _BAGGAGE_KEY: _baggage_of(current).get(BAGGAGE_KEY),
    }
    ctx = context_with_request_id(current, request_id)
    return IdToken(attach(ctx), ctx, restore)


def bind_trace_id(trace_id: str) -> IdToken:
    """Bind ``trace_id`` in the current context; return a token for :func:`reset_trace_id`."""
    current = get_current()
    ctx = _derive(current, {_TRACE_ID_KEY: _coerce(trace_id)})
    return IdToken(attach(ctx), ctx, {_TRACE_ID_KEY: current.get(_TRACE_ID_KEY)})


def reset_request_id(token: IdToken) -> None:
    """Restore the request id that was current before the matching :func:`bind_request_id`."""
    token._reset()


def reset_trace_id(token: IdToken) -> None:
    """Restore the trace id that was current before the matching :func:`bind_trace_id`."""
    token._reset()


class _Scope:
    __slots__ = ("_bind", "_token", "_value")

    def __init__(self, value: str, bind: Callable[[str], IdToken]) -> None:
        self._value = value
        self._bind = bind
        self._token: IdToken | None = None

    def __enter__(self) -> str:
        self._token = self._bind(self._value)
        return self._value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            token._reset()


def request_id_scope(request_id: str) -> _Scope:
    """Bind ``request_id`` for a ``with`` block and restore the previous one on exit."""
    return _Scope(request_id, bind_request_id)


def trace_id_scope(trace_id: str) -> _Scope:
    """Bind ``trace_id`` for a ``with`` block and restore the previous one on exit."""
    return _Scope(trace_id, bind_trace_id)


# --- snapshots ---------------------------------------------------------------------------------


def snapshot() -> dict[str, str]:
    """Return the current ids and W3C carrier as a flat, JSON- and pickle-safe ``dict[str, str]``.

    Keys: ``request_id``, ``trace_id`` (``""`` when unbound), plus ``traceparent``, ``tracestate``
    and ``baggage`` when the current context has them. Pass it across a process boundary and
    re-enter it there with :func:`apply_snapshot`.
    """
    ctx = get_current()
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
        ctx = context_from_snapshot(self._snap, get_current())
        self._token = None if ctx is None else attach(ctx)

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
