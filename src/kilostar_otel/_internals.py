"""Every use of an OpenTelemetry, loguru or Ray internal, fenced behind a named function.

Each entry says which versions it was verified on and what it falls back to (always a public
API) when the internal is missing or shaped differently. ``FAST_PATHS`` lists, for each entry, the
check that its fast path is live on the installed versions; the test suite asserts all of them,
so an upgrade that silently falls back to the slow path fails a test instead of a benchmark.

Nothing outside this module imports a private name of those libraries.
"""

from __future__ import annotations

import contextvars
import inspect
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import baggage, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context, attach, get_current
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, TraceState

if TYPE_CHECKING:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._configuration import _OTelSDKConfigurator as SDKConfigurator

__all__ = [
    "BAGGAGE_KEY",
    "FAST_PATHS",
    "SPAN_KEY",
    "WIRE_RESOURCE",
    "WIRE_SAMPLED",
    "WIRE_SCOPE",
    "SDKConfigurator",
    "add_link",
    "add_string_event",
    "attach_context",
    "attribute_items",
    "checked_trace_state",
    "current_context",
    "span_wire_fields",
    "grpc_exporter_with_encoder",
    "loguru_patcher",
    "ray_constants_module",
    "ray_in_worker",
    "ray_tracing_hook_enabled",
    "reset_context",
    "runtime_context_var",
    "sdk_encodes_none",
    "span_processors_of",
    "stamp_attribute",
    "stamp_attributes",
    "writable_attributes",
]

# --- the OpenTelemetry context -----------------------------------------------------------------


def _only_key(ctx: Context) -> str:
    (key,) = ctx.keys()
    return key


#: The context key OpenTelemetry's baggage API keeps its ``dict`` of entries under. Found through
#: the public API (``set_baggage`` on an empty context), so no private import: verified on
#: opentelemetry-api 1.27-1.45 (``opentelemetry.baggage._BAGGAGE_KEY``, a plain ``dict`` value).
BAGGAGE_KEY: Final = _only_key(baggage.set_baggage("k", "v", Context()))
#: The context key of the current span, found the same way (``_SPAN_KEY`` upstream).
SPAN_KEY: Final = _only_key(trace.set_span_in_context(trace.INVALID_SPAN, Context()))


def runtime_context_var() -> contextvars.ContextVar[Context] | None:
    """The ``ContextVar`` behind OTel's default runtime context, or None for another runtime.

    Verified on opentelemetry-api 1.27-1.45 (``_RUNTIME_CONTEXT._current_context`` of a
    ``ContextVarsRuntimeContext``). Fallback: None, and callers use ``get_current``/``attach``.
    """
    try:
        from opentelemetry.context import _RUNTIME_CONTEXT
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    except ImportError:  # pragma: no cover - a future API without them
        return None
    if type(_RUNTIME_CONTEXT) is not ContextVarsRuntimeContext:
        return None  # OTEL_PYTHON_CONTEXT names another runtime context
    var = getattr(_RUNTIME_CONTEXT, "_current_context", None)
    return var if isinstance(var, contextvars.ContextVar) else None


def _reset_by_token(token: contextvars.Token[Context]) -> None:
    token.var.reset(token)


# Picked once (as structlog's _make_stamper picks its stamper): the ContextVar's own methods, one
# C call each, instead of get_current()/attach() (two Python calls each) on every bind and span.
_VAR = runtime_context_var()
#: ``get_current()``: the current OTel context.
current_context: Final[Callable[[], Context]] = get_current if _VAR is None else _VAR.get
#: ``attach(ctx)``: make ``ctx`` current; returns the token for :func:`reset_context`.
attach_context: Final[Callable[[Context], contextvars.Token[Context]]] = (
    attach if _VAR is None else _VAR.set
)
#: Undo one :func:`attach_context`. Unlike ``opentelemetry.context.detach`` it raises
#: ``ValueError`` for a token of another context and ``RuntimeError`` on reuse (as the seed did).
reset_context: Final[Callable[[contextvars.Token[Context]], None]] = (
    _reset_by_token if _VAR is None else _VAR.reset
)

# --- SDK spans ---------------------------------------------------------------------------------


def writable_attributes(span: object, room: int) -> MutableMapping[str, Any] | None:
    """The SDK span's own attribute dict, when writing ``room`` new string values into it stores
    exactly what ``set_attribute`` would; else None (use ``set_attribute``).

    For a span that has just started and is not shared yet: no value-length limit, not frozen,
    room left under the attribute-count limit. Verified on opentelemetry-sdk 1.27-1.45
    (``Span._attributes``, a ``BoundedAttributes`` with ``_dict`` and ``_immutable``).
    Fallback: None.
    """
    attributes = getattr(span, "_attributes", None)
    if (
        type(attributes) is BoundedAttributes
        and attributes.max_value_len is None
        and not attributes._immutable
        and (attributes.maxlen is None or len(attributes._dict) + room <= attributes.maxlen)
    ):
        return attributes._dict
    return None


def stamp_attribute(span: object, key: str, value: str) -> None:
    """Set a string attribute on a span that has just started and is not shared yet.

    Written straight into the SDK's attribute dict when :func:`writable_attributes` allows it and
    the key is new. Verified on opentelemetry-sdk 1.27-1.45 (as :func:`writable_attributes`).
    Fallback: ``span.set_attribute(key, value)``.
    """
    values = writable_attributes(span, 1)
    if values is not None and key not in values:
        values[key] = value
    else:
        span.set_attribute(key, value)  # type: ignore[attr-defined]


def stamp_attributes(span: object, attributes: Mapping[str, str]) -> None:
    """Set string attributes on a span that has just started and is not shared yet.

    Written straight into the SDK's attribute dict when :func:`writable_attributes` allows it and
    every key is new (no per-value checks: the values are known strings). Verified on
    opentelemetry-sdk 1.27-1.45 (as :func:`writable_attributes`). Fallback:
    ``span.set_attributes(attributes)``.
    """
    values = writable_attributes(span, len(attributes))
    if values is not None and values.keys().isdisjoint(attributes):
        values.update(attributes)
    else:
        span.set_attributes(attributes)  # type: ignore[attr-defined]


def _sdk_span_type() -> type | None:
    """The SDK's span class when it adds links and events as :func:`add_link` expects."""
    try:
        from opentelemetry.sdk.trace import _Span
    except ImportError:  # pragma: no cover - a future SDK without it
        return None
    if callable(getattr(_Span, "_add_link", None)) and callable(getattr(_Span, "_add_event", None)):
        return _Span
    return None  # pragma: no cover - a future SDK without them


_SDK_SPAN: Final = _sdk_span_type()
# One empty, immutable attribute set for every link added by add_link (the SDK makes a new one
# per link): nothing ever writes to it, and readers see what a new one shows.
_NO_ATTRIBUTES: Final = BoundedAttributes(immutable=True)


def add_link(span: object, context: SpanContext) -> None:
    """``span.add_link(context)``: a link without attributes, on a span that may be shared.

    For a valid ``context`` on an SDK span the link is appended as ``add_link`` appends it (under
    the span's lock, not after the span has ended), without building an empty attribute set for
    it. Verified on opentelemetry-sdk 1.40-1.45 (``_Span._add_link``). Fallback:
    ``span.add_link(context)``.
    """
    if type(span) is _SDK_SPAN and context.is_valid:
        span._add_link(Link(context, _NO_ATTRIBUTES))  # type: ignore[attr-defined]
    else:
        span.add_link(context)  # type: ignore[attr-defined]


def add_string_event(span: object, name: str, key: str, value: str) -> None:
    """``span.add_event(name, {key: value})`` for a valid attribute name and a string value.

    On an SDK span whose limits keep the value as it is, the event's attributes are written
    directly instead of through the SDK's per-value checks, and the event is appended as
    ``add_event`` appends it (under the span's lock, not after the span has ended). Verified on
    opentelemetry-sdk 1.40-1.45 (``_Span._limits``, ``_Span._add_event``, ``BoundedAttributes``'
    ``_dict`` and ``_immutable``). Fallback: ``span.add_event(name, {key: value})``.
    """
    if type(span) is _SDK_SPAN:
        limits = span._limits  # type: ignore[attr-defined]
        room = limits.max_event_attributes
        max_len = limits.max_attribute_length
        if (room is None or room > 0) and (max_len is None or len(value) <= max_len):
            attributes = BoundedAttributes(room, None, immutable=False, max_value_len=max_len)
            attributes._dict[key] = value
            attributes._immutable = True
            span._add_event(Event(name, attributes))  # type: ignore[attr-defined]
            return
    span.add_event(name, {key: value})  # type: ignore[attr-defined]


def attribute_items(attributes: Any) -> Iterable[tuple[str, Any]]:
    """The items of a finished span's attributes, without the SDK's per-read copy and lock.

    Verified on opentelemetry-sdk 1.27-1.45 (``BoundedAttributes._dict``). Fallback: ``items()``.
    """
    if type(attributes) is BoundedAttributes:
        return attributes._dict.items()
    return attributes.items()  # type: ignore[no-any-return]


#: The status an SDK span has until ``set_status`` (one shared object: ReadableSpan's default).
_SDK_UNSET_STATUS: Final = inspect.signature(ReadableSpan.__init__).parameters["status"].default


#: Where :func:`span_wire_fields` puts the sampled flag, the resource and the scope.
WIRE_SAMPLED: Final = 16
WIRE_RESOURCE: Final = 17
WIRE_SCOPE: Final = 18


def span_wire_fields(span: Any) -> tuple[Any, ...]:
    """What exporting reads of a finished span, flat: ``(trace_id, span_id, trace_state,
    parent_span_id, parent_is_remote, name, kind, start, end, status, attributes,
    dropped_attributes, events, dropped_events, links, dropped_links, sampled, resource, scope)``.

    ``parent_span_id`` is None without a parent; ``status`` is None when it is the SDK's unset
    default; ``attributes`` is a mapping, ``events`` and ``links`` sequences; ``sampled`` the
    flags' sampled bit; ``scope`` None without one (OTLP groups spans by resource and scope).
    One call reads everything ``on_end`` needs. For the SDK's
    ``ReadableSpan`` read straight from its fields (``SpanContext`` is a tuple), without the
    properties' Python calls and copies. Verified on opentelemetry-sdk 1.40-1.45. Fallback: the
    public properties.
    """
    if type(span) is ReadableSpan:
        raw: Any = span
        context, parent = raw._context, raw._parent
        attributes, events, links = raw._attributes, raw._events, raw._links
        events_any: Any = events
        links_any: Any = links
        if (
            type(context) is SpanContext
            and (parent is None or type(parent) is SpanContext)
            and type(attributes) is BoundedAttributes
            and type(events) is BoundedList
            and type(links) is BoundedList
        ):
            status = raw._status
            return (
                context[0],
                context[1],
                context[4],
                None if parent is None else parent[1],
                parent is not None and parent[2],
                raw._name,
                raw._kind,
                raw._start_time,
                raw._end_time,
                None if status is _SDK_UNSET_STATUS else status,
                attributes._dict,
                attributes.dropped,
                events_any._dq,
                events.dropped,
                links_any._dq,
                links.dropped,
                bool(context[3] & 1),
                raw._resource,
                raw._instrumentation_scope or None,
            )
    context, parent = span.context, span.parent
    return (
        context.trace_id,
        context.span_id,
        context.trace_state,
        None if parent is None else parent.span_id,
        parent is not None and parent.is_remote,
        span.name,
        span.kind,
        span.start_time,
        span.end_time,
        span.status,
        span.attributes or {},
        span.dropped_attributes,
        span.events,
        span.dropped_events,
        span.links,
        span.dropped_links,
        context is not None and bool(context.trace_flags.sampled),
        span.resource,
        span.instrumentation_scope or None,
    )


class _CheckedTraceState(TraceState):
    """A :class:`TraceState` of members already checked against the level-2 grammar."""

    def __init__(self, entries: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self._dict = dict(entries)


def checked_trace_state(entries: Sequence[tuple[str, str]]) -> TraceState:
    """A ``TraceState`` holding ``entries`` as they are (already checked by the caller).

    OpenTelemetry's constructor re-checks keys with the level-1 grammar and would silently drop
    valid level-2 keys (``a@b@c``, ``1abc``). Verified on opentelemetry-api 1.27-1.45
    (``TraceState._dict``). Mutations (``add``/``update``/``delete``) return OTel's own class.
    Fallback: ``TraceState(entries)`` (level-2-only keys are dropped).
    """
    state = _CheckedTraceState(entries)
    if dict(state.items()) == dict(entries):
        return state
    return TraceState(list(entries))  # pragma: no cover - TraceState no longer keeps _dict


def grpc_exporter_with_encoder(
    encode: Callable[[Sequence[Any]], bytes], unsupported: type[Exception]
) -> type[OTLPSpanExporter]:
    """The SDK's OTLP/gRPC span exporter with its span encoding replaced by ``encode``.

    ``encode`` returns a serialized ``ExportTraceServiceRequest``, which goes on the wire as it
    is (the exporter's stub is swapped for one whose request serializer passes bytes through,
    instead of parsing them into a message gRPC serializes again); a batch it raises
    ``unsupported`` for goes through the SDK's own encoding. Verified on
    opentelemetry-exporter-otlp-proto-grpc 1.40-1.45 (the exporter's ``_translate_data`` step,
    and its ``_stub``, ``_channel`` and ``_client``, re-created from ``_stub`` on reconnection).
    Fallback: where those attributes are missing, the bytes are parsed into the SDK's message.
    """
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    def serialized(request: Any) -> bytes:
        return request if type(request) is bytes else request.SerializeToString()

    class BytesStub:
        """``TraceServiceStub`` whose ``Export`` takes the serialized request (or a message)."""

        def __init__(self, channel: Any) -> None:
            self.Export = channel.unary_unary(
                _TRACE_EXPORT_METHOD,
                request_serializer=serialized,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )

    class FastOTLPSpanExporter(OTLPSpanExporter):
        """``OTLPSpanExporter`` with the fast encoder."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            raw: Any = self
            self._sends_bytes = False
            if hasattr(raw, "_stub") and getattr(raw, "_channel", None) is not None:
                raw._stub = BytesStub  # the SDK re-creates its client from it on reconnection
                raw._client = BytesStub(raw._channel)
                self._sends_bytes = True

        def _translate_data(self, data: Sequence[Any]) -> Any:
            try:
                request = encode(data)
            except unsupported:
                return super()._translate_data(data)
            if self._sends_bytes:
                return request
            return ExportTraceServiceRequest.FromString(request)  # pragma: no cover

    return FastOTLPSpanExporter


_TRACE_EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def sdk_encodes_none() -> bool:
    """Whether the installed OTLP encoder writes ``None`` as an empty ``AnyValue`` (1.43 on).

    Older releases log and skip an attribute that is or holds ``None``. Probes the exporter's
    ``_internal._encode_value``; verified on opentelemetry-exporter-otlp-proto-common 1.40-1.45.
    Fallback: False (the caller then leaves such a batch to the SDK's own encoder).
    """
    try:
        from opentelemetry.exporter.otlp.proto.common._internal import _encode_value

        _encode_value(None)
    except Exception:
        return False
    return True


# --- SDK span processors and providers ---------------------------------------------------------


def span_processors_of(provider: object) -> tuple[object, ...]:
    """The span processors an SDK ``TracerProvider`` runs (there is no public getter).

    Verified on opentelemetry-sdk 1.27-1.45 (``_active_span_processor._span_processors``).
    Fallback: ``()``.
    """
    multi = getattr(provider, "_active_span_processor", None)
    processors = getattr(multi, "_span_processors", ())
    return tuple(processors) if isinstance(processors, (tuple, list)) else ()


def __getattr__(name: str) -> Any:
    # SDKConfigurator is imported on first use: the SDK's configuration module is heavy.
    if name == "SDKConfigurator":
        from opentelemetry.sdk._configuration import _OTelSDKConfigurator

        return _OTelSDKConfigurator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- loguru ------------------------------------------------------------------------------------


def loguru_patcher(logger: object) -> Callable[[Any], None] | None:
    """The patcher configured on loguru's ``logger`` (loguru has no public getter), or None.

    Verified on loguru 0.7.x (``logger._core.patcher``). Fallback: None (ours then replaces the
    user's patcher instead of running before it).
    """
    patcher = getattr(getattr(logger, "_core", None), "patcher", None)
    return patcher if callable(patcher) else None


# --- Ray ---------------------------------------------------------------------------------------


def ray_in_worker() -> bool:
    """True inside a Ray worker process (not the driver).

    Verified on ray 2.x up to 2.60 (``ray._private.worker.global_worker.mode``). Fallback: False.
    """
    try:
        import ray

        return bool(ray._private.worker.global_worker.mode == ray.WORKER_MODE)
    except Exception:
        return False


def ray_tracing_hook_enabled() -> bool:
    """True when Ray's own tracing hook is on in this process (only if Ray is imported).

    Verified on ray 2.x up to 2.60 (``ray.util.tracing.tracing_helper._is_tracing_enabled``).
    Fallback: False.
    """
    helper = sys.modules.get("ray.util.tracing.tracing_helper")
    try:
        return helper is not None and bool(helper._is_tracing_enabled())
    except Exception:
        return False


def ray_constants_module() -> Any:
    """Ray's constants module if Ray is imported, else None (never imports Ray).

    Verified on ray 2.x up to 2.60 (``ray._private.ray_constants``). Fallback: None.
    """
    return sys.modules.get("ray._private.ray_constants")


# --- the fast-path checks ----------------------------------------------------------------------


def _fast_runtime_context() -> bool:
    return _VAR is not None and current_context() is get_current()


def _fast_baggage_key() -> bool:
    from opentelemetry.baggage import _BAGGAGE_KEY

    return (
        BAGGAGE_KEY == _BAGGAGE_KEY and type(baggage.set_baggage("k", "v").get(BAGGAGE_KEY)) is dict
    )


def _fast_span_key() -> bool:
    from opentelemetry.trace.propagation import _SPAN_KEY

    return SPAN_KEY == _SPAN_KEY


def _fast_writable_attributes() -> bool:
    from opentelemetry.sdk.trace import TracerProvider

    span: Any = TracerProvider().get_tracer("check").start_span("check")
    values = writable_attributes(span, 2)
    if values is None:
        return False
    values["k"] = "v"
    stamp_attribute(span, "k2", "v2")
    stamp_attributes(span, {"k3": "v3", "k4": "v4"})
    return bool(
        span.attributes.get("k") == "v"
        and values.get("k2") == "v2"
        and values.get("k3") == "v3"
        and values.get("k4") == "v4"
    )


def _fast_attribute_items() -> bool:
    attributes: Any = BoundedAttributes(attributes={"a": 1}, immutable=True)
    items = attribute_items(attributes)
    return type(items) is type({}.items()) and dict(items) == {"a": 1}


def _fast_span_wire_fields() -> bool:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    tracer = TracerProvider().get_tracer("check")
    parent: Any = tracer.start_span("parent")
    span: Any = tracer.start_span(
        "check", context=trace.set_span_in_context(parent), attributes={"a": 1}
    )
    span.add_event("e")
    span.end()
    dropped: Any = TracerProvider(sampler=ALWAYS_OFF).get_tracer("check").start_span("dropped")
    unsampled = span_wire_fields(ReadableSpan("off", context=dropped.get_span_context()))
    readable = span._readable_span()
    fields = span_wire_fields(readable)
    return (
        type(readable) is ReadableSpan
        and fields[WIRE_SAMPLED] is True
        and unsampled[WIRE_SAMPLED] is False
        and fields[WIRE_RESOURCE] is readable.resource
        and fields[WIRE_SCOPE] == span.instrumentation_scope
        and fields[0] == span.context.trace_id
        and fields[3] == parent.context.span_id
        and fields[5] == "check"
        and fields[9] is None  # the unset default recognised
        and type(fields[10]) is dict
        and fields[10] == {"a": 1}
        and type(fields[12]) is deque
        and len(fields[12]) == 1
    )


def _fast_links_and_events() -> bool:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("check")
    span: Any = tracer.start_span("check")
    linked = tracer.start_span("linked").get_span_context()
    add_link(span, linked)
    add_string_event(span, "e", "k", "v")
    (link,) = span.links
    (event,) = span.events
    return (
        type(span) is _SDK_SPAN
        and link.attributes is _NO_ATTRIBUTES
        and link.context == linked
        and dict(link.attributes) == {}
        and event.name == "e"
        and type(event.attributes) is BoundedAttributes
        and dict(event.attributes) == {"k": "v"}
        and event.attributes._immutable
    )


def _fast_trace_state() -> bool:
    state = checked_trace_state([("a@b@c", "1")])
    return type(state) is _CheckedTraceState and dict(state.items()) == {"a@b@c": "1"}


def _fast_span_processors() -> bool:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    processor = SpanProcessor()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return span_processors_of(provider) == (processor,)


def _fast_loguru() -> bool:
    from loguru import logger

    def patcher(record: Any) -> None:
        """A probe."""

    previous = loguru_patcher(logger)
    logger.configure(patcher=patcher)
    try:
        return loguru_patcher(logger) is patcher
    finally:
        logger.configure(patcher=previous or (lambda record: None))


def _fast_ray() -> bool:
    import ray
    import ray.util.tracing.tracing_helper as helper

    return (
        ray._private.worker.global_worker.mode != ray.WORKER_MODE
        and not ray_in_worker()
        and callable(getattr(helper, "_is_tracing_enabled", None))
        and ray_tracing_hook_enabled() is bool(helper._is_tracing_enabled())
        and ray_constants_module() is sys.modules["ray._private.ray_constants"]
    )


def _fast_grpc_exporter() -> bool:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    exporter_class: Any = grpc_exporter_with_encoder(lambda spans: b"", ValueError)
    exporter = exporter_class(endpoint="127.0.0.1:1", insecure=True)
    try:
        return callable(getattr(OTLPSpanExporter, "_translate_data", None)) and bool(
            exporter._sends_bytes
        )
    finally:
        exporter.shutdown()


def _fast_sdk_configurator() -> bool:
    from opentelemetry.sdk._configuration import _BaseConfigurator

    configurator: type = __getattr__("SDKConfigurator")
    return issubclass(configurator, _BaseConfigurator)


def _fast_sdk_encodes_none() -> bool:
    # The probe reaches the SDK's value encoder (whatever it answers for None).
    from opentelemetry.exporter.otlp.proto.common import _internal

    return callable(getattr(_internal, "_encode_value", None))


#: For each entry above, a check that its fast path is live on the installed versions (the test
#: suite runs them all; each may import the optional library it is about).
FAST_PATHS: Final[dict[str, Callable[[], bool]]] = {
    "current_context": _fast_runtime_context,
    "BAGGAGE_KEY": _fast_baggage_key,
    "SPAN_KEY": _fast_span_key,
    "writable_attributes": _fast_writable_attributes,
    "add_link": _fast_links_and_events,
    "add_string_event": _fast_links_and_events,
    "attribute_items": _fast_attribute_items,
    "span_wire_fields": _fast_span_wire_fields,
    "checked_trace_state": _fast_trace_state,
    "grpc_exporter_with_encoder": _fast_grpc_exporter,
    "span_processors_of": _fast_span_processors,
    "loguru_patcher": _fast_loguru,
    "ray": _fast_ray,
    "SDKConfigurator": _fast_sdk_configurator,
    "sdk_encodes_none": _fast_sdk_encodes_none,
}
