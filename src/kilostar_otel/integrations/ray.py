"""Ray: remote tasks and actor methods that keep the caller's ids and trace.

Ray deliberately does not carry contextvars into tasks and actors. :func:`remote` (a drop-in for
``ray.remote``) makes every call carry :func:`~kilostar_otel.snapshot` as one extra keyword
argument, ``_kilostar_ctx``; the callee applies it for exactly the duration of that call, inside a
span that is a child of the caller's span. Plain, ``async``, generator and async-generator
functions and actor methods are supported, with or without Ray's own tracing hook.

:func:`setup_worker` is the ``worker_process_setup_hook`` (an importable string path, so it also
works with job submission) that configures tracing and the loguru patcher in every Ray worker.
Because Ray may kill pool workers without running ``atexit``, each traced call flushes its spans
before its result goes back to the caller. See ``docs/ray.md`` for the model.

``ray`` itself is imported lazily: importing this module does not import Ray, so
:func:`start_local_cluster` can still set the environment that Ray reads at import time.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from contextvars import Token
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from opentelemetry import trace
from opentelemetry.context import Context, attach
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode, Tracer

from kilostar_otel import _w3c
from kilostar_otel._version import __version__
from kilostar_otel.context import context_from_snapshot, snapshot

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "DEFAULT_FLUSH_TIMEOUT",
    "DEFAULT_SERVICE_NAME",
    "ENDPOINT_ENV",
    "FLUSH_TIMEOUT_ENV",
    "PROTOCOL_ENV",
    "RAY_TRACING_STARTUP_HOOK",
    "SERVICE_NAME_ENV",
    "SETUP_HOOK",
    "SNAPSHOT_KWARG",
    "TracedActorClass",
    "TracedActorHandle",
    "TracedRemoteFunction",
    "remote",
    "role_runtime_env",
    "setup_worker",
    "start_local_cluster",
    "traced_handle",
    "unwrap",
    "worker_runtime_env",
]

#: The keyword argument that carries the caller's snapshot to the callee.
SNAPSHOT_KWARG: Final = "_kilostar_ctx"
#: ``runtime_env={"worker_process_setup_hook": SETUP_HOOK}`` configures tracing in every worker.
SETUP_HOOK: Final = "kilostar_otel.integrations.ray.setup_worker"
#: The same function in the ``module:attribute`` form of ``ray.init(_tracing_startup_hook=...)``.
RAY_TRACING_STARTUP_HOOK: Final = "kilostar_otel.integrations.ray:setup_worker"

#: Environment read by :func:`setup_worker` (set them with :func:`worker_runtime_env`).
SERVICE_NAME_ENV: Final = "KILOSTAR_OTEL_RAY_SERVICE_NAME"
ENDPOINT_ENV: Final = "KILOSTAR_OTEL_RAY_ENDPOINT"
PROTOCOL_ENV: Final = "KILOSTAR_OTEL_RAY_PROTOCOL"
FLUSH_TIMEOUT_ENV: Final = "KILOSTAR_OTEL_RAY_FLUSH_TIMEOUT"
DEFAULT_SERVICE_NAME: Final = "kilostar-ray-worker"
#: Longest a traced call waits for its spans to be exported (seconds; 0 turns flushing off).
DEFAULT_FLUSH_TIMEOUT: Final = 5.0

_RAY_TRACE_KWARG: Final = "_ray_trace_ctx"
_INSTRUMENTATION: Final = "kilostar_otel.integrations.ray"
_log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


# --- tracing state of this process -------------------------------------------------------------


class _State:
    """Per-process state: the tracer, the flusher and the warn-once flags."""

    tracer: Tracer | None = None
    flush_timeout: float = DEFAULT_FLUSH_TIMEOUT
    warned_unconfigured = False
    configured_here = False
    flush_local_roots = False
    lock = threading.Lock()


def _tracer() -> Tracer:
    if _State.tracer is None:
        # A ProxyTracer until an SDK provider is installed; it follows the provider afterwards.
        _State.tracer = trace.get_tracer(_INSTRUMENTATION, __version__)
    return _State.tracer


def _tracing_configured() -> bool:
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _warn_unconfigured() -> None:
    with _State.lock:
        if _State.warned_unconfigured:
            return
        _State.warned_unconfigured = True
    _log.warning(
        "kilostar_otel: a traced Ray call arrived in worker process %d, but tracing was never set "
        "up in this process, so its spans are dropped. Start Ray with runtime_env="
        "{'worker_process_setup_hook': '%s'} (see kilostar_otel.integrations.ray."
        "worker_runtime_env). This warning is logged once per process.",
        os.getpid(),
        SETUP_HOOK,
    )


class _Flusher:
    """Exports finished spans on request, from one background thread, with a bounded wait.

    A call that ends asks for a flush and waits until a flush that started after its request has
    finished (so it covers the call's spans), or until the timeout: a dead collector slows each
    call by at most the timeout, and never piles up threads.
    """

    def __init__(self, export: Callable[[], object]) -> None:
        self._export = export
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._started_at = 0.0
        self._busy = False
        self._thread: threading.Thread | None = None

    def flush(self, timeout: float) -> bool:
        with self._cond:
            if self._busy and time.monotonic() - self._started_at > timeout:
                # The exporter is stuck (collector down): do not make every call wait for it.
                return False
            self._requested += 1
            ticket = self._requested
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="kilostar-otel-ray-flush", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done >= ticket, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._requested > self._done)
                target = self._requested
                self._busy = True
                self._started_at = time.monotonic()
            try:
                self._export()
            except Exception:  # noqa: S110 - an exporter failure must not kill the flusher
                pass
            with self._cond:
                self._busy = False
                self._done = target
                self._cond.notify_all()


def _force_flush_global() -> None:
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush is not None:
        flush()


_flusher = _Flusher(_force_flush_global)


def _flush() -> None:
    timeout = _State.flush_timeout
    if timeout > 0 and _tracing_configured():
        _flusher.flush(timeout)


async def _flush_async() -> None:
    if _State.flush_timeout > 0 and _tracing_configured():
        # Wait in a thread: an async actor keeps serving other calls meanwhile.
        await asyncio.get_running_loop().run_in_executor(None, _flush)


class _FlushLocalRoots(SpanProcessor):
    """Flushes when a span with no parent in this process ends: the outermost span of a call.

    Our own call spans flush themselves (without blocking an async actor's loop); this covers
    the spans around them or instead of them: Ray's own ``ray.remote_worker`` span when Ray's
    tracing hook is on, and spans that code in plain ``ray.remote`` functions starts.
    """

    def on_end(self, span: ReadableSpan) -> None:
        try:
            scope = span.instrumentation_scope
            if scope is not None and scope.name == _INSTRUMENTATION:
                return
            parent = span.parent
            if parent is None or parent.is_remote:
                _flush()
        except Exception:  # noqa: S110 - a span processor never raises into the traced code
            pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# --- the callee: apply the snapshot for exactly one call ---------------------------------------


def _ray_tracing_enabled() -> bool:
    helper = sys.modules.get("ray.util.tracing.tracing_helper")
    try:
        return helper is not None and bool(helper._is_tracing_enabled())
    except Exception:
        return False


def _ray_parent(carrier: object) -> Span | None:
    """The span Ray's own tracing made for this call, if Ray's tracing hook is on."""
    if not _ray_tracing_enabled():
        return None
    if isinstance(carrier, Mapping):
        # Generator methods: Ray passes its context but (unlike other methods) opens no span.
        try:
            parsed = _w3c.parse_traceparent(carrier.get("traceparent"))
        except Exception:
            return None
        return None if parsed is None else NonRecordingSpan(parsed)
    span = trace.get_current_span()
    return span if span.get_span_context().is_valid else None


def _call_context(snap: object, ray_carrier: object) -> tuple[Context, bool]:
    """The context of one call: an empty context updated from the snapshot, field by field.

    Nothing from the worker's current context is kept (no leftovers from earlier calls), except the
    span of Ray's own tracing for this very call when it belongs to the snapshot's trace. The flag
    says whether that span is a local one (Ray's consumer span, which ends after this call).
    """
    base = Context()
    ctx = base
    if snap is not None:
        try:
            ctx = context_from_snapshot(snap, base) or base
        except Exception:
            ctx = base
        if not _tracing_configured():
            _warn_unconfigured()
    ray_span = _ray_parent(ray_carrier)
    if ray_span is not None:
        ours = trace.get_current_span(ctx).get_span_context()
        theirs = ray_span.get_span_context()
        if not ours.is_valid or ours.trace_id == theirs.trace_id:
            return trace.set_span_in_context(ray_span, ctx), not theirs.is_remote
    return ctx, False


def _runtime_attributes(actor: bool) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {}
    try:
        import ray

        if not ray.is_initialized():
            return attributes  # asking would auto-start a local Ray instance
        runtime = ray.get_runtime_context()
        attributes["ray.job_id"] = runtime.get_job_id()
        task_id = runtime.get_task_id()
        if task_id:
            attributes["ray.task_id"] = task_id
        if actor:
            actor_id = runtime.get_actor_id()
            if actor_id:
                attributes["ray.actor_id"] = actor_id
    except Exception:  # noqa: S110 - attributes are a nicety; the call must run regardless
        pass
    return attributes


class _Target:
    """What a wrapped callable is: its span name and static attributes."""

    __slots__ = ("actor", "attributes", "span_name")

    def __init__(self, fn: Callable[..., Any], class_name: str | None) -> None:
        function = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "call")
        self.actor = class_name is not None
        if class_name is not None:
            method = getattr(fn, "__name__", "call")
            self.span_name = f"ray.actor {class_name}.{method}"
            self.attributes: dict[str, AttributeValue] = {
                "ray.remote": "actor",
                "ray.actor_class": class_name,
                "ray.actor_method": method,
                "ray.function": f"{class_name}.{method}",
            }
        else:
            self.span_name = f"ray.task {function}"
            self.attributes = {"ray.remote": "function", "ray.function": function}


class _Call:
    """One traced call on the callee: its span and the context that makes it current."""

    __slots__ = ("context", "nested", "span")

    def __init__(self, target: _Target, snap: object, ray_carrier: object) -> None:
        ctx, self.nested = _call_context(snap, ray_carrier)
        attributes = dict(target.attributes)
        attributes.update(_runtime_attributes(target.actor))
        self.span = _tracer().start_span(
            target.span_name, context=ctx, kind=SpanKind.CONSUMER, attributes=attributes
        )
        self.context = trace.set_span_in_context(self.span, ctx)

    def finish(self, exc: BaseException | None) -> None:
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

    def flush(self) -> None:
        """Export the call's spans now, unless the enclosing local span's end will do it."""
        if not (self.nested and _State.flush_local_roots):
            _flush()

    async def flush_async(self) -> None:
        if not (self.nested and _State.flush_local_roots):
            await _flush_async()


def _detach(token: Token[Context]) -> None:
    try:
        token.var.reset(token)
    except (ValueError, RuntimeError):
        # Created in another context (e.g. a generator finalised elsewhere): nothing to undo here.
        pass


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


def _finish_wrapper(
    wrapper: Callable[..., Any], fn: Callable[..., Any], names: tuple[str, ...]
) -> None:
    functools.update_wrapper(wrapper, fn)
    # No ``__wrapped__``: Ray reads the signature of ``inspect.unwrap(method)`` to check the call's
    # arguments on the caller, and that signature must accept the snapshot keyword.
    del wrapper.__wrapped__  # type: ignore[attr-defined]
    wrapper.__signature__ = _signature_with(fn, names)  # type: ignore[attr-defined]
    wrapper.__kilostar_traced__ = True  # type: ignore[attr-defined]


def _traced_callee(fn: _F, class_name: str | None = None) -> _F:
    """Return ``fn`` wrapped to apply a snapshot keyword for the duration of each call."""
    target = _Target(fn, class_name)
    if inspect.isasyncgenfunction(fn):
        wrapper: Callable[..., Any] = _wrap_async_generator(fn, target)
        names: tuple[str, ...] = (SNAPSHOT_KWARG, _RAY_TRACE_KWARG)
    elif inspect.isgeneratorfunction(fn):
        wrapper = _wrap_generator(fn, target)
        names = (SNAPSHOT_KWARG, _RAY_TRACE_KWARG)
    elif inspect.iscoroutinefunction(fn):
        wrapper = _wrap_coroutine(fn, target)
        names = (SNAPSHOT_KWARG,)
    else:
        wrapper = _wrap_function(fn, target)
        names = (SNAPSHOT_KWARG,)
    _finish_wrapper(wrapper, fn, names)
    return cast(_F, wrapper)


def _wrap_function(fn: Callable[..., Any], target: _Target) -> Callable[..., Any]:
    def wrapper(*args: Any, _kilostar_ctx: object = None, **kwargs: Any) -> Any:
        call = _Call(target, _kilostar_ctx, None)
        token = attach(call.context)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _detach(token)
            call.finish(exc)
            call.flush()
            raise
        _detach(token)
        call.finish(None)
        call.flush()
        return result

    return wrapper


def _wrap_coroutine(fn: Callable[..., Any], target: _Target) -> Callable[..., Any]:
    async def wrapper(*args: Any, _kilostar_ctx: object = None, **kwargs: Any) -> Any:
        call = _Call(target, _kilostar_ctx, None)
        token = attach(call.context)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            _detach(token)
            call.finish(exc)
            await call.flush_async()
            raise
        _detach(token)
        call.finish(None)
        await call.flush_async()
        return result

    return wrapper


def _wrap_generator(
    fn: Callable[..., Generator[Any, Any, Any]], target: _Target
) -> Callable[..., Generator[Any, Any, Any]]:
    def wrapper(
        *args: Any, _kilostar_ctx: object = None, _ray_trace_ctx: object = None, **kwargs: Any
    ) -> Generator[Any, Any, Any]:
        # The call's context is attached only while the wrapped generator runs, never across a
        # yield: the consumer's context is never changed and an early close cannot detach wrongly.
        call = _Call(target, _kilostar_ctx, _ray_trace_ctx)
        token = attach(call.context)
        try:
            gen = fn(*args, **kwargs)
        except BaseException as exc:
            call.finish(exc)
            call.flush()
            raise
        finally:
            _detach(token)
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = attach(call.context)
            try:
                item = gen.send(to_send) if to_throw is None else gen.throw(to_throw)
            except StopIteration as stop:
                _detach(token)
                call.finish(None)
                call.flush()
                return stop.value
            except BaseException as exc:
                _detach(token)
                call.finish(exc)
                call.flush()
                raise
            _detach(token)
            to_throw = None
            try:
                to_send = yield item
            except GeneratorExit:
                token = attach(call.context)
                try:
                    gen.close()
                finally:
                    _detach(token)
                    call.finish(None)
                    call.flush()
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper


def _wrap_async_generator(
    fn: Callable[..., AsyncGenerator[Any, Any]], target: _Target
) -> Callable[..., AsyncGenerator[Any, Any]]:
    async def wrapper(
        *args: Any, _kilostar_ctx: object = None, _ray_trace_ctx: object = None, **kwargs: Any
    ) -> AsyncGenerator[Any, Any]:
        call = _Call(target, _kilostar_ctx, _ray_trace_ctx)
        token = attach(call.context)
        try:
            agen = fn(*args, **kwargs)
        except BaseException as exc:
            call.finish(exc)
            await call.flush_async()
            raise
        finally:
            _detach(token)
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = attach(call.context)
            try:
                if to_throw is None:
                    item = await agen.asend(to_send)
                else:
                    item = await agen.athrow(to_throw)
            except StopAsyncIteration:
                _detach(token)
                call.finish(None)
                await call.flush_async()
                return
            except BaseException as exc:
                _detach(token)
                call.finish(exc)
                await call.flush_async()
                raise
            _detach(token)
            to_throw = None
            try:
                to_send = yield item
            except GeneratorExit:
                token = attach(call.context)
                try:
                    await agen.aclose()
                finally:
                    _detach(token)
                    call.finish(None)
                    await call.flush_async()
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper


def _traced_class(cls: type[_T]) -> type[_T]:
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
        namespace[name] = _traced_callee(member, class_name=cls.__name__)
    return cast("type[_T]", type(cls.__name__, (cls,), namespace))


# --- the caller: attach snapshot() to every call ------------------------------------------------


def _with_snapshot(kwargs: dict[str, Any]) -> dict[str, Any]:
    if SNAPSHOT_KWARG not in kwargs:
        kwargs[SNAPSHOT_KWARG] = snapshot()
    return kwargs


class _Proxy:
    """Forwards everything to the wrapped Ray object; subclasses add the traced ``remote()``."""

    __slots__ = ("_kilostar_inner",)

    def __init__(self, inner: Any) -> None:
        self._kilostar_inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._kilostar_inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kilostar_inner, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._kilostar_inner,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._kilostar_inner!r})"


class _TracedInvoker(_Proxy):
    """Wraps anything with a ``.remote()`` (an ``options()`` result, an actor method)."""

    __slots__ = ()

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit the call with the caller's :func:`~kilostar_otel.snapshot` attached."""
        return self._kilostar_inner.remote(*args, **_with_snapshot(kwargs))

    def options(self, **options: Any) -> _TracedInvoker:
        """Like Ray's ``options()``; the result still carries the snapshot."""
        return _TracedInvoker(self._kilostar_inner.options(**options))


class TracedRemoteFunction(_TracedInvoker):
    """A ``ray.remote`` function whose ``.remote()`` calls carry the caller's ids and trace."""

    __slots__ = ()


class TracedActorHandle:
    """An actor handle whose method calls carry the caller's ids and trace.

    Methods of a class made with :func:`remote` get the snapshot; any other attribute is the
    handle's own. Use :func:`unwrap` for APIs that need Ray's handle (``ray.kill``).
    """

    __slots__ = ("_kilostar_handle", "_kilostar_traced")

    def __init__(self, handle: Any) -> None:
        self._kilostar_handle = handle
        self._kilostar_traced = _traced_methods(handle)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._kilostar_handle, name)
        if self._kilostar_traced is None or name in self._kilostar_traced:
            return _TracedInvoker(attr)
        return attr

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._kilostar_handle,))

    def __eq__(self, other: object) -> bool:
        return bool(unwrap(other) == self._kilostar_handle)

    def __hash__(self) -> int:
        return hash(self._kilostar_handle)

    def __repr__(self) -> str:
        return f"TracedActorHandle({self._kilostar_handle!r})"


def _traced_methods(handle: Any) -> frozenset[str] | None:
    """Names of the methods whose signature accepts the snapshot (None: unknown, assume all)."""
    signatures = getattr(handle, "_ray_method_signatures", None)
    if not isinstance(signatures, Mapping):
        return None
    return frozenset(
        name
        for name, params in signatures.items()
        if any(getattr(p, "name", None) == SNAPSHOT_KWARG for p in params)
    )


class _TracedActorOptions(_Proxy):
    """An actor class's ``options()`` result: ``.remote()`` returns a traced handle."""

    __slots__ = ()

    def remote(self, *args: Any, **kwargs: Any) -> TracedActorHandle:
        """Create the actor; return a :class:`TracedActorHandle`."""
        return TracedActorHandle(self._kilostar_inner.remote(*args, **kwargs))


class TracedActorClass(_TracedActorOptions):
    """A ``ray.remote`` actor class whose handles carry the caller's ids and trace."""

    __slots__ = ()

    def options(self, **options: Any) -> _TracedActorOptions:
        """Like Ray's ``options()``; ``.remote()`` on the result returns a traced handle."""
        return _TracedActorOptions(self._kilostar_inner.options(**options))


def remote(*args: Any, **options: Any) -> Any:
    """``ray.remote`` whose calls carry the caller's ids and trace into the task or actor.

    Use as ``@remote`` or ``@remote(num_cpus=1, ...)`` (same options as ``ray.remote``) on a
    function or a class. Each ``.remote()`` call passes :func:`~kilostar_otel.snapshot`; the
    callee runs in a span that is a child of the caller's span, with the caller's ids bound.
    """
    import ray

    def make(obj: Any) -> Any:
        if inspect.isclass(obj):
            traced_cls = _traced_class(obj)
            return TracedActorClass(
                ray.remote(**options)(traced_cls) if options else ray.remote(traced_cls)
            )
        fn = _traced_callee(obj)
        return TracedRemoteFunction(ray.remote(**options)(fn) if options else ray.remote(fn))

    if len(args) == 1 and not options and callable(args[0]):
        return make(args[0])
    if args:
        raise TypeError("remote() takes a function or class, or keyword options only")
    return make


def traced_handle(handle: Any) -> TracedActorHandle:
    """Wrap an actor handle (e.g. from ``ray.get_actor``) so its calls carry the snapshot."""
    if isinstance(handle, TracedActorHandle):
        return handle
    return TracedActorHandle(handle)


def unwrap(obj: Any) -> Any:
    """Return Ray's own object behind a traced handle, class or function (``ray.kill(...)``)."""
    if isinstance(obj, TracedActorHandle):
        return obj._kilostar_handle
    if isinstance(obj, (_TracedInvoker, TracedActorClass, _TracedActorOptions)):
        return obj._kilostar_inner
    return obj


# --- worker setup ------------------------------------------------------------------------------


def _in_ray_worker() -> bool:
    try:
        import ray

        return bool(ray._private.worker.global_worker.mode == ray.WORKER_MODE)
    except Exception:
        return False


def _worker_resource() -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {"process.pid": os.getpid()}
    try:
        import ray

        if not ray.is_initialized():
            # As Ray's tracing hook, this runs before the worker is connected, where asking for
            # the runtime context would start a second, local Ray instance.
            return attributes
        runtime = ray.get_runtime_context()
        attributes["ray.job_id"] = runtime.get_job_id()
        attributes["ray.node_id"] = runtime.get_node_id()
        attributes["ray.worker_id"] = runtime.get_worker_id()
    except Exception:  # noqa: S110 - resource attributes are a nicety
        pass
    return attributes


def setup_worker() -> None:
    """Configure tracing in this Ray worker: OTLP export, the worker's service name, loguru.

    The ``worker_process_setup_hook`` (``SETUP_HOOK``); it also works as Ray's
    ``_tracing_startup_hook`` (``RAY_TRACING_STARTUP_HOOK``), where it leaves the driver alone.
    Reads ``KILOSTAR_OTEL_RAY_SERVICE_NAME``/``_ENDPOINT``/``_PROTOCOL``/``_FLUSH_TIMEOUT``.
    Runs once per process and never raises: a failure is logged and the worker keeps working.
    """
    try:
        timeout = os.environ.get(FLUSH_TIMEOUT_ENV)
        if timeout:
            _State.flush_timeout = max(float(timeout), 0.0)
    except ValueError:
        _log.warning("kilostar_otel: ignoring %s: not a number", FLUSH_TIMEOUT_ENV)
    if not _in_ray_worker():
        # Ray's tracing hook also runs in the driver, which configures tracing itself.
        return
    with _State.lock:
        if _State.configured_here or _tracing_configured():
            return
        _State.configured_here = True
    try:
        from kilostar_otel.configure import configure

        kwargs: dict[str, Any] = {
            "service_name": os.environ.get(SERVICE_NAME_ENV) or DEFAULT_SERVICE_NAME,
            "resource_attributes": _worker_resource(),
        }
        endpoint = os.environ.get(ENDPOINT_ENV)
        if endpoint:
            kwargs["endpoint"] = endpoint
        protocol = os.environ.get(PROTOCOL_ENV)
        if protocol:
            kwargs["protocol"] = protocol
        telemetry = configure(**kwargs)
        telemetry.tracer_provider.add_span_processor(_FlushLocalRoots())
        _State.flush_local_roots = True
    except Exception:
        _log.warning("kilostar_otel: tracing setup failed in Ray worker", exc_info=True)
        return
    _install_loguru_patcher()


def _install_loguru_patcher() -> None:
    try:
        import loguru  # noqa: F401
    except ImportError:
        return
    try:
        from kilostar_otel.integrations.logging import install_loguru

        install_loguru()
    except Exception:
        _log.warning("kilostar_otel: could not install the loguru patcher", exc_info=True)


def worker_runtime_env(
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    service_name: str | None = None,
    flush_timeout: float | None = None,
    runtime_env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a job ``runtime_env`` that sets up tracing in every worker with :func:`setup_worker`.

    Pass it to ``ray.init(runtime_env=...)`` or as ``--runtime-env-json`` to ``ray job submit``.
    ``endpoint``/``protocol`` are the driver's OTLP settings; ``service_name`` names the workers.
    """
    env = dict(runtime_env or {})
    env_vars = dict(env.get("env_vars") or {})
    for name, value in (
        (ENDPOINT_ENV, endpoint),
        (PROTOCOL_ENV, protocol),
        (SERVICE_NAME_ENV, service_name),
        (FLUSH_TIMEOUT_ENV, None if flush_timeout is None else repr(float(flush_timeout))),
    ):
        if value is not None:
            env_vars[name] = value
    if env_vars:
        env["env_vars"] = env_vars
    env["worker_process_setup_hook"] = SETUP_HOOK
    return env


def role_runtime_env(service_name: str) -> dict[str, Any]:
    """Return an actor or task ``runtime_env`` that gives its worker its own service name.

    ``Planner.options(runtime_env=role_runtime_env("planner")).remote()``: Ray merges these
    ``env_vars`` with the job's, so the job's setup hook still runs, in a dedicated worker.
    """
    return {"env_vars": {SERVICE_NAME_ENV: service_name}}


# --- a local cluster that stays on loopback ----------------------------------------------------

_LOOPBACK_ENV: Final = {
    # Ray reads this when ``ray`` is imported: "0" makes the node address 127.0.0.1 and keeps
    # every Ray listener on loopback (``_node_ip_address`` alone is overridden).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    # Quiet gRPC's fork warnings when an OTLP receiver runs in the driver.
    "GRPC_ENABLE_FORK_SUPPORT": "false",
}


def start_local_cluster(
    temp_dir: str | os.PathLike[str],
    *,
    num_cpus: int = 2,
    endpoint: str | None = None,
    protocol: str | None = None,
    service_name: str | None = None,
    ray_tracing_hook: bool = False,
    **init_kwargs: Any,
) -> Any:
    """Start a local Ray cluster that listens on 127.0.0.1 only, with tracing in every worker.

    Ray's files go under ``temp_dir``, the dashboard is off, and the job's ``runtime_env`` runs
    :func:`setup_worker` (see :func:`worker_runtime_env`). Call it before anything imports
    ``ray``: Ray fixes its listen address at import time, so a late call raises RuntimeError
    rather than start a cluster on every interface. Returns ``ray.init``'s context.
    """
    ray_module = sys.modules.get("ray")
    if ray_module is None:
        os.environ.update(_LOOPBACK_ENV)
    else:
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is None or getattr(constants, "ENABLE_RAY_CLUSTER", True):
            raise RuntimeError(
                "ray was imported before start_local_cluster(): set "
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray to keep it on loopback"
            )
        for key, value in _LOOPBACK_ENV.items():
            os.environ.setdefault(key, value)
    import ray

    runtime_env = worker_runtime_env(
        endpoint=endpoint,
        protocol=protocol,
        service_name=service_name,
        runtime_env=init_kwargs.pop("runtime_env", None),
    )
    kwargs: dict[str, Any] = {
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "_temp_dir": os.fspath(temp_dir),
        "_node_ip_address": "127.0.0.1",
        "runtime_env": runtime_env,
    }
    if ray_tracing_hook:
        kwargs["_tracing_startup_hook"] = RAY_TRACING_STARTUP_HOOK
    kwargs.update(init_kwargs)
    context: Any = ray.init(**kwargs)
    if context.address_info.get("node_ip_address") != "127.0.0.1":
        ray.shutdown()
        raise RuntimeError("the Ray node did not bind 127.0.0.1; refusing to keep it running")
    return context
