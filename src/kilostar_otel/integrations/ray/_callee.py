"""The callee: each traced task or actor method applies the caller's snapshot for its call.

The wrapper (made by :func:`kilostar_otel._calls.wrap`) takes the snapshot keyword out of the
call, opens a ``CONSUMER`` span that is a child of the caller's span, runs the function with that
context attached, and flushes the spans before the result goes back to the caller.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode, Tracer

from kilostar_otel import _w3c
from kilostar_otel._calls import wrap
from kilostar_otel._guard import internal_error
from kilostar_otel._idcontext import context_from_snapshot, with_own_ids
from kilostar_otel._internals import ray_tracing_hook_enabled, stamp_attributes
from kilostar_otel._version import __version__
from kilostar_otel.integrations.ray._flush import (
    INSTRUMENTATION,
    Flushing,
    flush,
    flush_async,
    tracing_configured,
)
from kilostar_otel.integrations.ray._worker import warn_unconfigured

__all__ = [
    "RAY_TRACE_KWARG",
    "SNAPSHOT_KWARG",
    "Call",
    "Target",
    "call_context",
    "traced_callee",
    "traced_class",
]

#: The keyword argument that carries the caller's snapshot to the callee.
SNAPSHOT_KWARG: Final = "_kilostar_ctx"
#: The keyword argument in which Ray's own tracing passes its context to generator methods.
RAY_TRACE_KWARG: Final = "_ray_trace_ctx"

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


class _Tracer:
    tracer: Tracer | None = None


def _tracer() -> Tracer:
    if _Tracer.tracer is None:
        # A ProxyTracer until an SDK provider is installed; it follows the provider afterwards.
        _Tracer.tracer = trace.get_tracer(INSTRUMENTATION, __version__)
    return _Tracer.tracer


def _ray_parent(carrier: object) -> Span | None:
    """The span Ray's own tracing made for this call, if Ray's tracing hook is on."""
    if not ray_tracing_hook_enabled():
        return None
    if isinstance(carrier, Mapping):
        # Generator methods: Ray passes its context but (unlike other methods) opens no span.
        parsed = _w3c.parse_traceparent(carrier.get("traceparent"))
        return None if parsed is None else NonRecordingSpan(parsed)
    span = trace.get_current_span()
    return span if span.get_span_context().is_valid else None


class _Contexts:
    """The call contexts made from this worker's recent snapshots, by content.

    A worker's calls mostly repeat a few snapshots (every call from one caller's span carries
    the same one), and a context is immutable: parsing each snapshot once is enough.
    """

    limit: Final = 256
    by_snapshot: dict[tuple[tuple[str, str], ...], Context] = {}  # noqa: RUF012


def _snapshot_key(snap: object) -> tuple[tuple[str, str], ...] | None:
    """The snapshot's content as a cache key; None unless it is a dict of strings (``1`` and
    ``True`` are equal keys of different meaning: other snapshots are parsed every time)."""
    if type(snap) is not dict:
        return None
    key = tuple(snap.items())
    for name, value in key:
        if type(name) is not str or type(value) is not str:
            return None
    return key


def _snapshot_context(snap: object) -> Context:
    """An empty context updated from the snapshot, field by field, that defines its own ids."""
    key = _snapshot_key(snap)
    if key is not None:
        cached = _Contexts.by_snapshot.get(key)
        if cached is not None:
            return cached
    base = Context()
    ctx = base
    if snap is not None:
        ctx = context_from_snapshot(snap, base) or base
        if not tracing_configured():
            warn_unconfigured()
    ctx = with_own_ids(ctx)  # the worker's variables hold nothing of this call's
    if key is not None:
        if len(_Contexts.by_snapshot) >= _Contexts.limit:
            _Contexts.by_snapshot.clear()
        _Contexts.by_snapshot[key] = ctx
    return ctx


def call_context(snap: object, ray_carrier: object) -> tuple[Context, bool]:
    """The context of one call: an empty context updated from the snapshot, field by field.

    Nothing from the worker's current context is kept (no leftovers from earlier calls), except the
    span of Ray's own tracing for this very call when it belongs to the snapshot's trace. The flag
    says whether that span is a local one (Ray's consumer span, which ends after this call).
    """
    ctx = _snapshot_context(snap)
    ray_span = _ray_parent(ray_carrier)
    if ray_span is not None:
        ours = trace.get_current_span(ctx).get_span_context()
        theirs = ray_span.get_span_context()
        if not ours.is_valid or ours.trace_id == theirs.trace_id:
            return trace.set_span_in_context(ray_span, ctx), not theirs.is_remote
    return ctx, False


class _Runtime:
    """This worker's Ray runtime context, job id and actor id, once known (a worker serves one
    job; a pool worker that becomes an actor stays that actor)."""

    context: Any = None
    job_id: str = ""
    actor_id: str = ""


def _add_runtime_attributes(attributes: dict[str, str], actor: bool) -> None:
    """Add the call's job, task and actor ids to ``attributes`` (none outside Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return  # asking would auto-start a local Ray instance
        runtime = _Runtime.context
        if runtime is None:
            runtime = _Runtime.context = ray.get_runtime_context()
        if not _Runtime.job_id:
            _Runtime.job_id = runtime.get_job_id()
        attributes["ray.job_id"] = _Runtime.job_id
        task_id = runtime.get_task_id()
        if task_id:
            attributes["ray.task_id"] = task_id
        if actor:
            if not _Runtime.actor_id:
                _Runtime.actor_id = runtime.get_actor_id() or ""
            if _Runtime.actor_id:
                attributes["ray.actor_id"] = _Runtime.actor_id
    except Exception as exc:  # attributes are a nicety; the call must run regardless
        internal_error("ray call attributes", exc)


class Target:
    """What a wrapped callable is: its span name and static attributes."""

    __slots__ = ("actor", "attributes", "span_name")

    def __init__(self, fn: Callable[..., Any], class_name: str | None) -> None:
        function = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "call"))
        self.actor = class_name is not None
        if class_name is not None:
            method = getattr(fn, "__name__", "call")
            self.span_name = f"ray.actor {class_name}.{method}"
            self.attributes: dict[str, str] = {
                "ray.remote": "actor",
                "ray.actor_class": class_name,
                "ray.actor_method": method,
                "ray.function": f"{class_name}.{method}",
            }
        else:
            self.span_name = f"ray.task {function}"
            self.attributes = {"ray.remote": "function", "ray.function": function}


class Call:
    """One traced call on the callee (a :class:`kilostar_otel._calls.Run`): span and context."""

    __slots__ = ("context", "nested", "span")

    def __init__(self, target: Target, snap: object, ray_carrier: object) -> None:
        ctx, self.nested = call_context(snap, ray_carrier)
        self.span = _tracer().start_span(target.span_name, context=ctx, kind=SpanKind.CONSUMER)
        # Set after the start (samplers see the name, not these): known strings, written at once.
        attributes = target.attributes.copy()
        _add_runtime_attributes(attributes, target.actor)
        stamp_attributes(self.span, attributes)
        self.context = trace.set_span_in_context(self.span, ctx)

    def _end(self, exc: BaseException | None) -> bool:
        """End the span; True if the call's spans should be flushed now."""
        span = self.span
        if (
            exc is not None
            and not isinstance(exc, (GeneratorExit, SystemExit))
            and type(exc).__name__ != "AsyncioActorExit"
            and span.is_recording()
        ):
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
        # Within Ray's own local span, that span's end flushes (see FlushLocalRoots).
        return not (self.nested and Flushing.local_roots)

    def finish(self, exc: BaseException | None) -> None:
        """End the span and export the call's spans."""
        if self._end(exc):
            flush()

    async def finish_async(self, exc: BaseException | None) -> None:
        """End the span and export the call's spans without blocking the event loop."""
        if self._end(exc):
            await flush_async()


def _signature_with(fn: Callable[..., Any], names: tuple[str, ...]) -> inspect.Signature:
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    have = {p.name for p in params}
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
        for name in names
        if name not in have
    ]
    if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        params[-1:-1] = extra
    else:
        params.extend(extra)
    return sig.replace(parameters=params)


def traced_callee(fn: _F, class_name: str | None = None) -> _F:
    """Return ``fn`` wrapped to apply a snapshot keyword for the duration of each call.

    The wrapper is of the same kind as ``fn`` (Ray checks it for generators and async actors)
    and its signature is ``fn``'s plus the keywords it takes: the snapshot, and for generators
    the context that Ray's own tracing passes.
    """
    target = Target(fn, class_name)
    names: tuple[str, ...]
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        names = (SNAPSHOT_KWARG, RAY_TRACE_KWARG)

        def start(kwargs: dict[str, Any]) -> Call:
            snap = kwargs.pop(SNAPSHOT_KWARG, None)
            return Call(target, snap, kwargs.pop(RAY_TRACE_KWARG, None))

    else:
        names = (SNAPSHOT_KWARG,)

        def start(kwargs: dict[str, Any]) -> Call:
            return Call(target, kwargs.pop(SNAPSHOT_KWARG, None), None)

    wrapper = wrap(fn, start)
    # No ``__wrapped__``: Ray reads the signature of ``inspect.unwrap(method)`` to check the call's
    # arguments on the caller, and that signature must accept the snapshot keyword.
    del wrapper.__wrapped__  # type: ignore[attr-defined]
    wrapper.__signature__ = _signature_with(fn, names)  # type: ignore[attr-defined]
    wrapper.__kilostar_traced__ = True  # type: ignore[attr-defined]
    return cast(_F, wrapper)


def traced_class(cls: type[_T]) -> type[_T]:
    """Return a subclass of ``cls`` whose public methods apply a snapshot for each call.

    Dunder methods (``__init__`` included), static and class methods are left as they are.
    """
    namespace: dict[str, Any] = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
    }
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name.endswith("__"):
            continue
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, (staticmethod, classmethod)) or not inspect.isfunction(member):
            continue
        if getattr(member, "__kilostar_traced__", False):
            continue
        namespace[name] = traced_callee(member, class_name=cls.__name__)
    return cast("type[_T]", type(cls.__name__, (cls,), namespace))
