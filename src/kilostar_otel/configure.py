"""``configure()``: tracing, OTLP export and propagation for KiloStar in one call.

It builds a ``TracerProvider`` (resource, link-aware sampler, :class:`KiloStarSpanProcessor`, a
batch pipeline to an OTLP exporter), installs it and the propagator globally, and returns a
:class:`Telemetry` handle. The standard ``OTEL_*`` variables are honoured; arguments win over
them. Everything is validated here, so a bad setting fails at start-up, never on a request.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes, AttributeValue

from kilostar_otel._version import __version__
from kilostar_otel.processor import KiloStarSpanProcessor
from kilostar_otel.sampling import LinkAwareSampler, sampler_from_name

__all__ = ["Telemetry", "configure", "has_kilostar_processor"]

_log = logging.getLogger(__name__)

OtlpProtocol = Literal["grpc", "http/protobuf"]
_PROTOCOLS: Final = ("grpc", "http/protobuf")
_COMPRESSIONS: Final = ("gzip", "deflate", "none")
_EXPORTERS: Final = ("otlp", "console", "none")
_DEFAULT_ENDPOINTS: Final = {
    "grpc": "http://localhost:4317",
    "http/protobuf": "http://localhost:4318/v1/traces",
}
#: Batch defaults (``OTEL_BSP_*`` override them). The specification's delays, but a queue of
#: 8,192 and batches of 1,024 instead of 2,048 and 512: with the fast encoder the pipeline keeps
#: up with far higher span rates, larger batches halve the per-request cost, and the room absorbs
#: the gaps while a batch is on the wire (docs/benchmarks.md; about 20 MB at most for small
#: spans). A default batch larger than a configured queue shrinks to the queue.
_BSP_DEFAULTS: Final = {
    "OTEL_BSP_MAX_QUEUE_SIZE": 8192,
    "OTEL_BSP_SCHEDULE_DELAY": 5000,
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 1024,
    "OTEL_BSP_EXPORT_TIMEOUT": 30000,
}
_HEADER_NAME_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_TRUE: Final = "true"

_lock = threading.Lock()
_global: Telemetry | None = None


# -- reading the environment ----------------------------------------------------------------------


def _env(*names: str) -> tuple[str, str] | None:
    """The first of ``names`` set to a non-blank value, as ``(name, value)``."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


def _env_bool(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value not in ("", _TRUE, "false"):
        _log.warning("%s=%r is not 'true' or 'false'; treating it as false", name, value[:32])
    return value == _TRUE


def _positive_int(value: object, what: str) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"{what} must be a positive integer, not {value!r}") from None
    if isinstance(number, bool) or number <= 0:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return number


def _batch_setting(argument: int | None, env_name: str, what: str) -> int:
    if argument is not None:
        return _positive_int(argument, what)
    value = os.environ.get(env_name, "").strip()
    return _positive_int(value, env_name) if value else _BSP_DEFAULTS[env_name]


# -- endpoint, protocol, headers ------------------------------------------------------------------


def _resolve_protocol(protocol: str | None) -> str:
    if protocol is not None:
        value, source = protocol, "protocol"
    else:
        found = _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
        if found is None:
            return "grpc"
        source, value = found
    value = value.strip().lower()
    if value not in _PROTOCOLS:
        hint = " (OTLP/JSON is not supported by the Python exporter)" if "json" in value else ""
        raise ValueError(f"{source} must be 'grpc' or 'http/protobuf', not {value!r}{hint}")
    return value


def _resolve_endpoint(protocol: str, endpoint: str | None, insecure: bool | None) -> str:
    """The full endpoint URL (``http(s)://host:port`` for gRPC, the POST URL for HTTP)."""
    if endpoint is not None:
        source, raw, kind = "endpoint", endpoint, "argument"
    else:
        found = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        kind = "signal"
        if found is None:
            found = _env("OTEL_EXPORTER_OTLP_ENDPOINT")
            kind = "base"
        if found is None:
            return _DEFAULT_ENDPOINTS[protocol]
        source, raw = found
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{source} must be a URL such as http://localhost:4317, not {raw!r}")
    raw = raw.strip()
    if _BAD_VALUE_RE.search(raw) or " " in raw:
        raise ValueError(f"{source} contains whitespace or control characters: {raw!r}")
    if "://" not in raw:
        if protocol != "grpc":
            raise ValueError(f"{source} must start with http:// or https://, not {raw!r}")
        if insecure is None:
            insecure = _env_bool("OTEL_EXPORTER_OTLP_TRACES_INSECURE") or _env_bool(
                "OTEL_EXPORTER_OTLP_INSECURE"
            )
        raw = ("http://" if insecure else "https://") + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{source} must use http:// or https://, not {raw!r}")
    try:
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise ValueError(f"{source} has an invalid port: {raw!r}") from None
    if not host:
        raise ValueError(f"{source} has no host: {raw!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{source} must not carry credentials; use headers instead")
    if parts.fragment or (protocol == "grpc" and parts.query):
        raise ValueError(f"{source} must not have a query or fragment: {raw!r}")
    netloc = parts.netloc
    if protocol == "grpc":
        if parts.path not in ("", "/"):
            raise ValueError(f"{source} is a gRPC endpoint and cannot have a path: {raw!r}")
        if port is None:
            raise ValueError(f"{source} needs a port for gRPC (e.g. :4317): {raw!r}")
        return f"{parts.scheme}://{netloc}"
    path = parts.path
    if kind == "base" or (kind == "argument" and path in ("", "/")):
        path = path.rstrip("/") + "/v1/traces"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{path}{query}"


def _resolve_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    if headers is None:
        return None  # the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)HEADERS itself
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME_RE.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if not isinstance(value, str) or _BAD_VALUE_RE.search(value):
            raise ValueError(f"header {name!r} must have a string value without control chars")
        checked[name.lower()] = value  # gRPC metadata keys must be lower case
    return checked


def _resolve_compression(compression: str | None) -> str:
    if compression is not None:
        source, value = "compression", compression
    else:
        found = _env("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
        if found is None:
            return "none"
        source, value = found
    value = value.strip().lower()
    if value not in _COMPRESSIONS:
        raise ValueError(f"{source} must be 'gzip', 'deflate' or 'none', not {value!r}")
    return value


def _resolve_propagator(propagator: TextMapPropagator | None) -> TextMapPropagator:
    if propagator is not None:
        return propagator
    configured = os.environ.get("OTEL_PROPAGATORS", "").strip()
    if not configured:
        from kilostar_otel.propagation import default_propagator

        return default_propagator()
    from importlib.metadata import entry_points

    from opentelemetry.propagators.composite import CompositePropagator

    propagators: list[TextMapPropagator] = []
    for name in (part.strip() for part in configured.split(",")):
        if not name:
            continue
        if name.lower() == "none":
            return CompositePropagator([])
        found = list(entry_points(group="opentelemetry_propagator", name=name))
        if not found:
            raise ValueError(f"OTEL_PROPAGATORS names an unknown propagator {name!r}")
        propagators.append(found[0].load()())
    return CompositePropagator(propagators)


def _resolve_sampler(sampler: Sampler | str | None, sampler_arg: float | str | None) -> Sampler:
    if isinstance(sampler, Sampler):
        return sampler
    if sampler is not None:
        if not isinstance(sampler, str):
            raise ValueError(f"sampler must be a Sampler or a sampler name, not {sampler!r}")
        return sampler_from_name(sampler, sampler_arg)
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip() or "parentbased_always_on"
    arg = sampler_arg if sampler_arg is not None else os.environ.get("OTEL_TRACES_SAMPLER_ARG")
    return sampler_from_name(name, arg)


# -- the pipeline ---------------------------------------------------------------------------------


class _ExportPipeline(SpanProcessor):
    """Hands sampled spans to the current batch processor and counts the ones it drops.

    The SDK's batch processor drops a span (with one log line) when its queue is full; here the
    queue is checked first so every drop is counted. :meth:`replace` swaps the batch processor
    when ``configure()`` runs again, so the provider never gets a second export processor.
    """

    def __init__(self, batch: BatchSpanProcessor | None, max_queue_size: int) -> None:
        self._lock = threading.Lock()
        self._dropped = 0
        self._set(batch, max_queue_size)

    def _set(self, batch: BatchSpanProcessor | None, max_queue_size: int) -> None:
        # The SDK keeps its queue (a bounded deque) on an inner BatchProcessor since 1.3x and
        # on the span processor itself before; without either, drops cannot be counted.
        inner = getattr(batch, "_batch_processor", batch)
        queue = getattr(inner, "_queue", None)
        if queue is None:
            queue = getattr(inner, "queue", None)
        self._batch = batch
        self._queue: deque[Any] | None = queue if isinstance(queue, deque) else None
        self._max_queue_size = max_queue_size
        self._inner: object = inner

    def _stopped(self) -> bool:
        inner = self._inner
        return bool(getattr(inner, "_shutdown", False) or getattr(inner, "done", False))

    def replace(
        self, batch: BatchSpanProcessor | None, max_queue_size: int, timeout_millis: int
    ) -> None:
        """Send new spans to ``batch``; flush and shut down the previous batch processor."""
        old = self._batch
        self._set(batch, max_queue_size)
        if old is not None:
            _shutdown_batch(old, timeout_millis)

    def stop(self, timeout_millis: int) -> None:
        """Flush and shut down the batch processor within ``timeout_millis``.

        The batch processor's shutdown exports what is queued and gives up at the timeout; the
        SDK's ``force_flush`` ignores its timeout (and retries for as long as the back end is
        down), so it is not called here.
        """
        if self._batch is not None:
            _shutdown_batch(self._batch, timeout_millis)

    @property
    def dropped(self) -> int:
        """Spans dropped so far."""
        return self._dropped

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span for export, counting it if the queue has no room."""
        batch = self._batch
        ctx = span.context
        if batch is None or ctx is None or not ctx.trace_flags.sampled:
            return
        queue = self._queue
        if queue is not None and (len(queue) >= self._max_queue_size or self._stopped()):
            with self._lock:
                self._dropped += 1
        batch.on_end(span)

    def shutdown(self) -> None:
        """Flush and stop the batch processor."""
        if self._batch is not None:
            _shutdown_batch(self._batch, 30000)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued now."""
        return self._batch.force_flush(timeout_millis) if self._batch is not None else True


def _shutdown_batch(batch: BatchSpanProcessor, timeout_millis: int) -> None:
    inner = getattr(batch, "_batch_processor", None)
    if inner is not None and hasattr(inner, "shutdown"):
        inner.shutdown(timeout_millis=timeout_millis)
    else:
        batch.shutdown()  # type: ignore[no-untyped-call]


class _SamplerSlot(Sampler):
    """The provider's sampler: forwards to the current one, which ``configure()`` may replace."""

    def __init__(self, sampler: Sampler) -> None:
        self.current = sampler

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Ask the current sampler."""
        return self.current.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """The current sampler's description."""
        return self.current.get_description()


@dataclass(frozen=True)
class _Settings:
    """Everything ``configure()`` resolved from its arguments and the environment."""

    disabled: bool
    resource: dict[str, Any]
    exporter: str  # "otlp", "console", "none" or "custom"
    custom_exporter: SpanExporter | None
    protocol: str
    endpoint: str
    headers: dict[str, str] | None
    compression: str
    timeout: float | None
    sampler: Sampler | tuple[str, str | float | None]
    link_aware: bool
    propagator: TextMapPropagator | str
    max_queue_size: int
    schedule_delay_millis: int
    max_export_batch_size: int
    export_timeout_millis: int
    set_global: bool = field(compare=False)


def _build_exporter(settings: _Settings) -> SpanExporter | None:
    if settings.exporter == "custom":
        return settings.custom_exporter
    if settings.exporter == "none":
        return None
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if settings.protocol == "grpc":
        import grpc

        from kilostar_otel._otlp import grpc_span_exporter_class

        grpc_exporter = grpc_span_exporter_class()  # the SDK's, with a faster encoder

        grpc_compression = {
            "gzip": grpc.Compression.Gzip,
            "deflate": grpc.Compression.Deflate,
            "none": grpc.Compression.NoCompression,
        }[settings.compression]
        return grpc_exporter(
            endpoint=settings.endpoint,
            insecure=settings.endpoint.startswith("http://"),
            headers=settings.headers,
            timeout=settings.timeout,
            compression=grpc_compression,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(
        endpoint=settings.endpoint,
        headers=settings.headers,
        timeout=settings.timeout,
        compression=Compression(settings.compression),
    )


def _build_batch(settings: _Settings, exporter: SpanExporter | None) -> BatchSpanProcessor | None:
    if exporter is None:
        return None  # exporter "none": spans get their ids but are sent nowhere
    return BatchSpanProcessor(
        exporter,
        max_queue_size=settings.max_queue_size,
        schedule_delay_millis=settings.schedule_delay_millis,
        max_export_batch_size=settings.max_export_batch_size,
        export_timeout_millis=settings.export_timeout_millis,
    )


def _build_sampler(settings: _Settings) -> Sampler:
    if isinstance(settings.sampler, Sampler):
        sampler = settings.sampler
    else:
        sampler = sampler_from_name(*settings.sampler)
    return LinkAwareSampler(sampler) if settings.link_aware else sampler


# -- the handle -----------------------------------------------------------------------------------


class Telemetry:
    """What :func:`configure` set up: the provider, its exporter, and how to flush or stop it.

    ``dropped_spans`` counts spans the batch pipeline dropped because its queue was full (or it
    was shut down). Usable as a context manager that shuts everything down on exit.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        propagator: TextMapPropagator,
        *,
        settings: _Settings,
        exporter: SpanExporter | None,
        pipeline: _ExportPipeline | None,
        sampler_slot: _SamplerSlot | None,
        owns_provider: bool,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._propagator = propagator
        self._settings = settings
        self._exporter = exporter
        self._pipeline = pipeline
        self._sampler_slot = sampler_slot
        self._owns_provider = owns_provider
        self._shut_down = False
        self._atexit_registered = False
        self._flush_lock = threading.Lock()
        self._flush_thread: threading.Thread | None = None

    @property
    def tracer_provider(self) -> TracerProvider:
        """The SDK provider (with ``disabled`` a provider that records nothing)."""
        return self._tracer_provider

    @property
    def propagator(self) -> TextMapPropagator:
        """The propagator configured (installed globally unless ``set_global=False``)."""
        return self._propagator

    @property
    def exporter(self) -> SpanExporter | None:
        """The span exporter spans are sent to (``None`` for ``"none"`` or when disabled)."""
        return self._exporter

    @property
    def sampler(self) -> Sampler:
        """The sampler deciding new spans (a :class:`LinkAwareSampler` by default)."""
        if self._sampler_slot is not None:
            return self._sampler_slot.current
        return self._tracer_provider.sampler

    @property
    def enabled(self) -> bool:
        """False when ``disabled``/``OTEL_SDK_DISABLED`` turned tracing off."""
        return not self._settings.disabled

    @property
    def is_global(self) -> bool:
        """True when the provider and propagator were installed as the global ones."""
        return self._settings.set_global

    @property
    def protocol(self) -> str:
        """``"grpc"`` or ``"http/protobuf"`` (meaningful for the OTLP exporter)."""
        return self._settings.protocol

    @property
    def endpoint(self) -> str:
        """The OTLP endpoint URL (the POST URL for HTTP)."""
        return self._settings.endpoint

    @property
    def dropped_spans(self) -> int:
        """Spans dropped by the batch pipeline since configure() (queue full or shut down)."""
        return self._pipeline.dropped if self._pipeline is not None else 0

    def get_tracer(self, name: str, version: str | None = None) -> trace.Tracer:
        """A tracer from this handle's provider (useful with ``set_global=False``)."""
        return self._tracer_provider.get_tracer(name, version)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every finished span now; False if it did not finish within the timeout.

        The SDK's flush can outlive its timeout while the back end is down (it retries), so it
        runs on a helper thread that this call waits for at most ``timeout_millis``. A flush still
        running from an earlier call is waited for first, so flushes never pile up.
        """
        if self._shut_down or not self.enabled:
            return not self._shut_down
        deadline = time.monotonic() + max(timeout_millis, 0) / 1000
        if not self._flush_lock.acquire(timeout=max(timeout_millis, 0) / 1000):
            return False  # another caller is flushing and did not finish in our time
        try:
            earlier = self._flush_thread
            if earlier is not None and earlier.is_alive():
                earlier.join(max(deadline - time.monotonic(), 0))
                if earlier.is_alive():
                    return False
            done: list[bool] = []
            provider = self._tracer_provider

            def flush() -> None:
                done.append(provider.force_flush(timeout_millis))

            worker = threading.Thread(target=flush, name="kilostar-otel-flush", daemon=True)
            self._flush_thread = worker
            worker.start()
            worker.join(max(deadline - time.monotonic(), 0))
        finally:
            self._flush_lock.release()
        return bool(done) and done[0]

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Flush and stop the export pipeline (idempotent); spans ended later are dropped."""
        if self._shut_down:
            return
        self._shut_down = True
        if self._pipeline is not None:
            self._pipeline.stop(timeout_millis)
            if self._pipeline.dropped:
                _log.warning(
                    "kilostar-otel dropped %d span(s) because the export queue was full; raise "
                    "max_queue_size (OTEL_BSP_MAX_QUEUE_SIZE) or check that the back end keeps up",
                    self._pipeline.dropped,
                )
        if self._owns_provider:
            self._tracer_provider.shutdown()
        elif self.enabled:
            self._tracer_provider.force_flush(timeout_millis)

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.shutdown)
            self._atexit_registered = True

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        where = self._settings.exporter
        if where == "otlp":
            where = f"otlp {self._settings.protocol} {self._settings.endpoint}"
        return f"<Telemetry {where} enabled={self.enabled} global={self.is_global}>"


# -- configure() ----------------------------------------------------------------------------------


def configure(
    service_name: str | None = None,
    *,
    endpoint: str | None = None,
    protocol: OtlpProtocol | None = None,
    headers: Mapping[str, str] | None = None,
    insecure: bool | None = None,
    compression: Literal["gzip", "deflate", "none"] | None = None,
    timeout: float | None = None,
    exporter: SpanExporter | Literal["otlp", "console", "none"] | None = None,
    resource_attributes: Mapping[str, AttributeValue] | None = None,
    sampler: Sampler | str | None = None,
    sampler_arg: float | str | None = None,
    link_aware_sampling: bool = True,
    propagator: TextMapPropagator | None = None,
    set_global: bool = True,
    disabled: bool | None = None,
    max_queue_size: int | None = None,
    schedule_delay_millis: int | None = None,
    max_export_batch_size: int | None = None,
    export_timeout_millis: int | None = None,
) -> Telemetry:
    """Set up tracing and OTLP export for KiloStar ids in one call; return a :class:`Telemetry`.

    Installs (globally, unless ``set_global=False``) a ``TracerProvider`` with the resource,
    a :class:`~kilostar_otel.sampling.LinkAwareSampler`, :class:`KiloStarSpanProcessor` and a
    batch pipeline to the OTLP exporter, plus the propagator (tracecontext, baggage, kilostar
    unless ``OTEL_PROPAGATORS`` says otherwise). ``OTEL_*`` variables fill what arguments leave
    out. Calling it again with the same settings returns the same handle; with other settings
    the export pipeline and sampler are replaced in place. Invalid settings raise ValueError.
    See docs/configuration.md for every argument, variable and default.
    """
    settings = _resolve(
        service_name=service_name,
        endpoint=endpoint,
        protocol=protocol,
        headers=headers,
        insecure=insecure,
        compression=compression,
        timeout=timeout,
        exporter=exporter,
        resource_attributes=resource_attributes,
        sampler=sampler,
        sampler_arg=sampler_arg,
        link_aware_sampling=link_aware_sampling,
        propagator=propagator,
        set_global=set_global,
        disabled=disabled,
        max_queue_size=max_queue_size,
        schedule_delay_millis=schedule_delay_millis,
        max_export_batch_size=max_export_batch_size,
        export_timeout_millis=export_timeout_millis,
    )
    # Everything that can be wrong has been checked; only now is anything built or installed.
    resolved_propagator = _resolve_propagator(propagator)
    if not set_global:
        return _build_private(settings, resolved_propagator)
    with _lock:
        return _configure_global(settings, resolved_propagator)


def _resolve(**kw: Any) -> _Settings:
    disabled = kw["disabled"]
    if disabled is None:
        disabled = _env_bool("OTEL_SDK_DISABLED")
    service_name = kw["service_name"]
    if service_name is not None and (not isinstance(service_name, str) or not service_name):
        raise ValueError(f"service_name must be a non-empty string, not {service_name!r}")
    attributes: dict[str, Any] = {
        "telemetry.distro.name": "kilostar-otel",
        "telemetry.distro.version": __version__,
    }
    attributes.update(kw["resource_attributes"] or {})
    if service_name is not None:
        attributes["service.name"] = service_name
    resource = dict(Resource.create(attributes).attributes)

    exporter = kw["exporter"]
    custom: SpanExporter | None = None
    if isinstance(exporter, SpanExporter):
        kind, custom = "custom", exporter
    elif exporter is not None:
        if not isinstance(exporter, str) or exporter.strip().lower() not in _EXPORTERS:
            raise ValueError(
                f"exporter must be a SpanExporter or one of {', '.join(_EXPORTERS)}, "
                f"not {exporter!r}"
            )
        kind = exporter.strip().lower()
    else:
        found = _env("OTEL_TRACES_EXPORTER")
        kind = found[1].lower() if found else "otlp"
        if kind not in _EXPORTERS:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER must be one of {', '.join(_EXPORTERS)} for configure(), "
                f"not {kind!r}; pass exporter=<SpanExporter> for anything else"
            )

    resolved_protocol = _resolve_protocol(kw["protocol"])
    resolved_endpoint = _resolve_endpoint(resolved_protocol, kw["endpoint"], kw["insecure"])
    timeout = kw["timeout"]
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")

    sampler = kw["sampler"]
    if isinstance(sampler, Sampler):
        sampler_spec: Sampler | tuple[str, str | float | None] = sampler
    else:
        _resolve_sampler(sampler, kw["sampler_arg"])  # validates
        if sampler is not None:
            sampler_spec = (sampler, kw["sampler_arg"])
        else:
            arg = kw["sampler_arg"]
            sampler_spec = (
                os.environ.get("OTEL_TRACES_SAMPLER", "").strip() or "parentbased_always_on",
                arg if arg is not None else os.environ.get("OTEL_TRACES_SAMPLER_ARG"),
            )

    max_queue = _batch_setting(kw["max_queue_size"], "OTEL_BSP_MAX_QUEUE_SIZE", "max_queue_size")
    max_batch = _batch_setting(
        kw["max_export_batch_size"], "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "max_export_batch_size"
    )
    if (
        kw["max_export_batch_size"] is None
        and not os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "").strip()
    ):
        max_batch = min(max_batch, max_queue)  # the default batch fits any configured queue
    if max_batch > max_queue:
        raise ValueError(
            f"max_export_batch_size ({max_batch}) must not exceed max_queue_size ({max_queue})"
        )
    propagator = kw["propagator"]
    if propagator is not None and not isinstance(propagator, TextMapPropagator):
        raise ValueError(f"propagator must be a TextMapPropagator, not {propagator!r}")

    return _Settings(
        disabled=bool(disabled),
        resource=resource,
        exporter=kind,
        custom_exporter=custom,
        protocol=resolved_protocol,
        endpoint=resolved_endpoint,
        headers=_resolve_headers(kw["headers"]),
        compression=_resolve_compression(kw["compression"]),
        timeout=float(timeout) if timeout is not None else None,
        sampler=sampler_spec,
        link_aware=bool(kw["link_aware_sampling"]),
        propagator=propagator if propagator is not None else os.environ.get("OTEL_PROPAGATORS", ""),
        max_queue_size=max_queue,
        schedule_delay_millis=_batch_setting(
            kw["schedule_delay_millis"], "OTEL_BSP_SCHEDULE_DELAY", "schedule_delay_millis"
        ),
        max_export_batch_size=max_batch,
        export_timeout_millis=_batch_setting(
            kw["export_timeout_millis"], "OTEL_BSP_EXPORT_TIMEOUT", "export_timeout_millis"
        ),
        set_global=bool(kw["set_global"]),
    )


def _disabled_handle(settings: _Settings, propagator: TextMapPropagator) -> Telemetry:
    provider = TracerProvider(
        sampler=ALWAYS_OFF, resource=Resource(settings.resource), shutdown_on_exit=False
    )
    return Telemetry(
        provider,
        propagator,
        settings=settings,
        exporter=None,
        pipeline=None,
        sampler_slot=None,
        owns_provider=True,
    )


def _build_private(settings: _Settings, propagator: TextMapPropagator) -> Telemetry:
    if settings.disabled:
        return _disabled_handle(settings, propagator)
    exporter = _build_exporter(settings)
    sampler = _build_sampler(settings)
    provider = TracerProvider(sampler=sampler, resource=Resource(settings.resource))
    provider.add_span_processor(KiloStarSpanProcessor())
    pipeline = _ExportPipeline(_build_batch(settings, exporter), settings.max_queue_size)
    provider.add_span_processor(pipeline)
    return Telemetry(
        provider,
        propagator,
        settings=settings,
        exporter=exporter,
        pipeline=pipeline,
        sampler_slot=None,
        owns_provider=True,
    )


def _configure_global(settings: _Settings, propagator: TextMapPropagator) -> Telemetry:
    global _global
    from kilostar_otel.propagation import set_global as set_global_propagator

    current = _global
    if current is not None and current._settings == settings and not current._shut_down:
        return current
    if settings.disabled:
        # Nothing to install: spans stay no-ops, but ids still travel in headers.
        if current is not None:
            current.shutdown()
        set_global_propagator(propagator)
        return _disabled_handle(settings, propagator)

    if current is not None and current.enabled:
        return _reconfigure(current, settings, propagator)

    installed = trace.get_tracer_provider()
    if isinstance(installed, TracerProvider):
        # Someone else (e.g. opentelemetry-instrument) owns the global provider: add our span
        # processor to it if missing and leave its exporters and sampler alone.
        if not has_kilostar_processor(installed):
            installed.add_span_processor(KiloStarSpanProcessor())
            _mark(installed)
        _log.warning(
            "configure(): a TracerProvider is already installed; added the KiloStar span "
            "processor to it and left its exporters and sampler unchanged"
        )
        set_global_propagator(propagator)
        return Telemetry(
            installed,
            propagator,
            settings=settings,
            exporter=None,
            pipeline=None,
            sampler_slot=None,
            owns_provider=False,
        )
    if not isinstance(installed, trace.ProxyTracerProvider):
        raise ValueError(
            f"a non-SDK TracerProvider ({type(installed).__name__}) is already installed "
            "globally; use configure(set_global=False)"
        )

    exporter = _build_exporter(settings)
    slot = _SamplerSlot(_build_sampler(settings))
    provider = TracerProvider(
        sampler=slot, resource=Resource(settings.resource), shutdown_on_exit=False
    )
    provider.add_span_processor(KiloStarSpanProcessor())
    pipeline = _ExportPipeline(_build_batch(settings, exporter), settings.max_queue_size)
    provider.add_span_processor(pipeline)
    _mark(provider)
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        raise ValueError("another TracerProvider was installed concurrently; configure() lost")
    set_global_propagator(propagator)
    handle = Telemetry(
        provider,
        propagator,
        settings=settings,
        exporter=exporter,
        pipeline=pipeline,
        sampler_slot=slot,
        owns_provider=True,
    )
    handle._register_atexit()
    _global = handle
    return handle


def _reconfigure(
    current: Telemetry, settings: _Settings, propagator: TextMapPropagator
) -> Telemetry:
    """Apply new settings to the provider ``configure()`` installed before."""
    if settings.resource != current._settings.resource:
        raise ValueError(
            "configure() already installed the global TracerProvider with resource "
            f"{current._settings.resource!r}; the resource (service name, resource attributes) "
            "cannot change in a running process"
        )
    from kilostar_otel.propagation import set_global as set_global_propagator

    pipeline, slot = current._pipeline, current._sampler_slot
    # Both are set on every enabled global handle.
    assert pipeline is not None
    assert slot is not None
    exporter = _build_exporter(settings)
    slot.current = _build_sampler(settings)
    pipeline.replace(
        _build_batch(settings, exporter), settings.max_queue_size, settings.export_timeout_millis
    )
    set_global_propagator(propagator)
    current._settings = settings
    current._exporter = exporter
    current._propagator = propagator
    current._shut_down = False
    return current


# -- recognising our processor on any provider ----------------------------------------------------

_MARK: Final = "_kilostar_processor_installed"


def _mark(provider: TracerProvider) -> None:
    try:
        setattr(provider, _MARK, True)
    except AttributeError:
        pass


def has_kilostar_processor(provider: object) -> bool:
    """True when ``provider`` already has a :class:`KiloStarSpanProcessor` (never add two)."""
    if getattr(provider, _MARK, False):
        return True
    multi = getattr(provider, "_active_span_processor", None)
    processors = getattr(multi, "_span_processors", ())
    try:
        return any(isinstance(p, KiloStarSpanProcessor) for p in processors)
    except TypeError:
        return False
