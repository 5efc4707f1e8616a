"""``configure()``: tracing, OTLP export and propagation for KiloStar in one call.

It builds a ``TracerProvider`` (resource, link-aware sampler, :class:`KiloStarSpanProcessor`, a
batch pipeline to an OTLP exporter), installs it and the propagator globally, and returns a
:class:`Telemetry` handle. The settings (arguments, then ``OTEL_*`` variables, then defaults) are
resolved and checked in :mod:`kilostar_otel._settings`, so a bad setting fails at start-up, never
on a request; the export pipeline lives in :mod:`kilostar_otel._export`.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Final, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes, AttributeValue

from kilostar_otel._export import (
    PROCESSOR_MARK,
    _ExportPipeline,
    build_exporter,
    mark_processor_installed,
)
from kilostar_otel._internals import span_processors_of
from kilostar_otel._settings import Settings, build_propagator, resolve_settings
from kilostar_otel.processor import KiloStarSpanProcessor
from kilostar_otel.sampling import LinkAwareSampler, sampler_from_name

__all__ = ["Telemetry", "configure", "has_kilostar_processor", "live_handles"]

_log = logging.getLogger(__name__)

OtlpProtocol = Literal["grpc", "http/protobuf"]

_lock = threading.Lock()
_global: Telemetry | None = None
#: Every handle with an export pipeline, re-initialised in a forked child.
_handles: weakref.WeakSet[Telemetry] = weakref.WeakSet()
_fork_hook_registered = False

#: Set per process by the SDK (since 1.4x) and renewed in a forked child: never a conflict.
_INSTANCE_ID: Final = "service.instance.id"


# -- the sampler ----------------------------------------------------------------------------------


def _build_sampler(settings: Settings) -> Sampler:
    if isinstance(settings.sampler, Sampler):
        sampler = settings.sampler
    else:
        sampler = sampler_from_name(*settings.sampler)
    return LinkAwareSampler(sampler) if settings.link_aware else sampler


class _SamplerSlot(Sampler):
    """The provider's sampler: forwards to the current one, which ``configure()`` may replace."""

    def __init__(self, sampler: Sampler) -> None:
        self.current = sampler

    @property
    def current(self) -> Sampler:
        """The sampler that decides."""
        return self._current

    @current.setter
    def current(self, sampler: Sampler) -> None:
        self._current = sampler
        # Tracers ask for every span: this instance's should_sample is the current sampler's own
        # bound method, so a decision costs no extra call (the method below is the fallback).
        vars(self)["should_sample"] = sampler.should_sample

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
        return self._current.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """The current sampler's description."""
        return self._current.get_description()


# -- the handle -----------------------------------------------------------------------------------


class Telemetry:
    """What :func:`configure` set up: the provider, its exporter, and how to flush or stop it.

    Every span handed to export ends up in exactly one count: ``delivered_spans`` (the back end
    accepted it), ``failed_spans`` (its export failed after the exporter's retries) or
    ``dropped_spans`` (never sent: the queue was full in spans or bytes, or it was shut down),
    or it is still queued. Alert on the last two. Counts are per process (a forked child starts
    at zero). Usable as a context manager that shuts everything down on exit.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        propagator: TextMapPropagator,
        *,
        settings: Settings,
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
        self._pid = os.getpid()

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
        """Spans never sent: the queue was full (``max_queue_size`` or ``max_queue_bytes``), the
        pipeline was shut down, or spans were still queued when the shutdown gave up."""
        return self._pipeline.dropped if self._pipeline is not None else 0

    @property
    def failed_spans(self) -> int:
        """Spans lost in exports that failed (after the exporter's retries and timeout)."""
        return self._pipeline.failed if self._pipeline is not None else 0

    @property
    def delivered_spans(self) -> int:
        """Spans the back end accepted."""
        return self._pipeline.delivered if self._pipeline is not None else 0

    @property
    def cut_spans(self) -> int:
        """Spans sent as a safe copy marked ``kilostar.span.cut`` (text that could not be
        encoded was escaped, values over ``max_span_bytes`` were cut); they were not lost."""
        return self._pipeline.cut if self._pipeline is not None else 0

    @property
    def queued_bytes(self) -> int:
        """Bytes of the spans waiting in the export queue now (encoded; estimated for non-gRPC)."""
        return self._pipeline.queued_bytes if self._pipeline is not None else 0

    def get_tracer(self, name: str, version: str | None = None) -> trace.Tracer:
        """A tracer from this handle's provider (useful with ``set_global=False``)."""
        return self._tracer_provider.get_tracer(name, version)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every finished span now; True only if that finished in time and lost nothing.

        False when the flush did not finish within ``timeout_millis`` (the spans stay queued
        and are retried), or when an export failed meanwhile (``failed_spans`` grew: those
        spans are lost). The SDK's own ``force_flush`` returns True in both cases. The SDK's
        flush can outlive its timeout while the back end is down (it retries), so it runs on a
        helper thread that this call waits for at most ``timeout_millis``; a flush still running
        from an earlier call is waited for first, so flushes never pile up.
        """
        if self._shut_down or not self.enabled:
            return not self._shut_down
        failed_before = self.failed_spans
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
        return bool(done) and done[0] and self.failed_spans == failed_before

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Flush and stop the export pipeline (idempotent); spans ended later are dropped."""
        if self._shut_down:
            return
        self._shut_down = True
        if self._pipeline is not None:
            self._pipeline.stop(timeout_millis)  # logs the spans it dropped, if any
        if self._owns_provider:
            self._tracer_provider.shutdown()
        elif self.enabled:
            self._tracer_provider.force_flush(timeout_millis)

    def _exit(self) -> None:
        """At interpreter exit: flush for at most ``exit_timeout_millis``, then give up."""
        self.shutdown(self._settings.exit_timeout_millis)

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self._exit)
            self._atexit_registered = True

    def _after_fork(self) -> None:
        """In a forked child: a fresh export pipeline (own connections, counts from zero).

        The SDK's provider renews ``service.instance.id`` for the child itself (since 1.4x).
        """
        self._pid = os.getpid()
        self._flush_lock = threading.Lock()
        self._flush_thread = None
        if self._pipeline is not None and not self._shut_down:
            if (
                self._settings.exporter == "otlp"
                and self._settings.protocol == "grpc"
                and os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "").lower() not in ("1", "true")
            ):
                _log.warning(
                    "kilostar-otel: exporting over gRPC from a forked child needs "
                    "GRPC_ENABLE_FORK_SUPPORT=true (set before grpc is imported), or use "
                    "protocol='http/protobuf'; gRPC may hang or crash otherwise"
                )
            exporter = build_exporter(self._settings)
            self._pipeline.after_fork(exporter)
            self._exporter = exporter

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
    max_queue_bytes: int | None = None,
    exit_timeout_millis: int | None = None,
    max_span_bytes: int | None = None,
    strict: bool | None = None,
) -> Telemetry:
    """Set up tracing and OTLP export for KiloStar ids in one call; return a :class:`Telemetry`.

    Installs (globally, unless ``set_global=False``) a ``TracerProvider`` with the resource,
    a :class:`~kilostar_otel.sampling.LinkAwareSampler`, :class:`KiloStarSpanProcessor` and a
    batch pipeline to the OTLP exporter, plus the propagator (tracecontext, baggage, kilostar
    unless ``OTEL_PROPAGATORS`` says otherwise). ``OTEL_*`` variables fill what arguments leave
    out. Calling it again with the same settings returns the same handle; with other settings
    the export pipeline and sampler are replaced in place. In a forked child (gunicorn
    ``post_fork``, multiprocessing) the handle has already re-initialised itself for that
    process. A call that conflicts with the first (another resource) logs a warning and keeps
    the first resource, unless ``strict``; invalid settings raise ValueError. See
    docs/configuration.md for every argument, variable and default.

    Args:
        service_name: ``service.name`` of the resource (else ``OTEL_SERVICE_NAME``).
        endpoint: OTLP endpoint URL, or ``host:port`` for gRPC (``OTEL_EXPORTER_OTLP_*ENDPOINT``).
        protocol: ``"grpc"`` (default) or ``"http/protobuf"`` (``OTEL_EXPORTER_OTLP_*PROTOCOL``).
        headers: extra request headers / gRPC metadata, e.g. an API key.
        insecure: plaintext for a gRPC ``host:port`` endpoint (``OTEL_EXPORTER_OTLP_*INSECURE``).
        compression: ``"gzip"``, ``"deflate"`` or ``"none"`` (default).
        timeout: seconds per export request (the exporter's default: 10).
        exporter: a ``SpanExporter``, or ``"otlp"`` (default), ``"console"``, ``"none"``.
        resource_attributes: more resource attributes; they win over ``OTEL_RESOURCE_ATTRIBUTES``.
        sampler: a ``Sampler`` or a sampler name (default ``"parentbased_always_on"``).
        sampler_arg: the named sampler's argument, e.g. the ratio in [0, 1].
        link_aware_sampling: wrap the sampler in ``LinkAwareSampler`` (default True).
        propagator: the propagator to install (default tracecontext, baggage, kilostar).
        set_global: install provider and propagator globally (default True); False: private.
        disabled: record and export nothing; ids still travel (else ``OTEL_SDK_DISABLED``).
        max_queue_size: spans the batch queue holds (8192); more are dropped and counted.
        schedule_delay_millis: longest wait between two exports (5000).
        max_export_batch_size: spans per export request (1024, at most ``max_queue_size``).
        export_timeout_millis: the batch pipeline's export timeout (30000).
        max_queue_bytes: bytes of queued spans (64 MiB); more are dropped and counted.
        exit_timeout_millis: longest the at-exit flush may hold the process up (5000).
        max_span_bytes: estimated bytes one span may send (1 MiB); longer values are cut.
        strict: a conflicting second call raises ValueError instead of warning (False).
    """
    settings = resolve_settings(
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
        max_queue_bytes=max_queue_bytes,
        exit_timeout_millis=exit_timeout_millis,
        max_span_bytes=max_span_bytes,
        strict=strict,
    )
    # Everything that can be wrong has been checked; only now is anything built or installed.
    resolved_propagator = build_propagator(settings)
    if not settings.set_global:
        return _build_private(settings, resolved_propagator)
    with _lock:
        return _configure_global(settings, resolved_propagator)


def _disabled_handle(settings: Settings, propagator: TextMapPropagator) -> Telemetry:
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


def _build_provider(
    settings: Settings, sampler: Sampler, shutdown_on_exit: bool
) -> tuple[TracerProvider, SpanExporter | None, _ExportPipeline]:
    """A provider with the KiloStar span processor, then the export pipeline."""
    exporter = build_exporter(settings)
    provider = TracerProvider(
        sampler=sampler, resource=Resource(settings.resource), shutdown_on_exit=shutdown_on_exit
    )
    provider.add_span_processor(KiloStarSpanProcessor())
    pipeline = _ExportPipeline(exporter, settings)
    provider.add_span_processor(pipeline)
    return provider, exporter, pipeline


def _track(handle: Telemetry) -> None:
    """Re-initialise ``handle`` in every forked child (registered after its provider's hook)."""
    global _fork_hook_registered
    _handles.add(handle)
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_registered = True


def live_handles() -> list[Telemetry]:
    """Every handle of this process that has an export pipeline (for flushing at exit)."""
    return list(_handles)


def _after_fork_in_child() -> None:
    """The at-fork hook: fresh locks and export pipelines; never raises into ``os.fork()``."""
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    for handle in list(_handles):
        try:
            handle._after_fork()
        except Exception:
            _log.exception("kilostar-otel could not re-initialise export in a forked child")


def _build_private(settings: Settings, propagator: TextMapPropagator) -> Telemetry:
    if settings.disabled:
        return _disabled_handle(settings, propagator)
    provider, exporter, pipeline = _build_provider(settings, _build_sampler(settings), True)
    handle = Telemetry(
        provider,
        propagator,
        settings=settings,
        exporter=exporter,
        pipeline=pipeline,
        sampler_slot=None,
        owns_provider=True,
    )
    _track(handle)
    return handle


def _same_resource(first: Mapping[str, object], second: Mapping[str, object]) -> bool:
    """Equal but for ``service.instance.id``, which the SDK renews in every process."""
    return {k: v for k, v in first.items() if k != _INSTANCE_ID} == {
        k: v for k, v in second.items() if k != _INSTANCE_ID
    }


def _configure_global(settings: Settings, propagator: TextMapPropagator) -> Telemetry:
    global _global
    from kilostar_otel.propagation import set_global as set_global_propagator

    current = _global
    if current is not None and current._pid != os.getpid():
        current._after_fork()  # forked without os.fork()'s hooks (they normally did this)
    if current is not None and _same_resource(current._settings.resource, settings.resource):
        settings = dataclasses.replace(settings, resource=current._settings.resource)
        if current._settings == settings and not current._shut_down:
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
            mark_processor_installed(installed)
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
        message = (
            f"a non-SDK TracerProvider ({type(installed).__name__}) is already installed "
            "globally; use configure(set_global=False)"
        )
        if settings.strict:
            raise ValueError(message)
        _log.warning("configure(): %s; tracing with a private provider instead", message)
        set_global_propagator(propagator)
        return _build_private(dataclasses.replace(settings, set_global=False), propagator)

    slot = _SamplerSlot(_build_sampler(settings))
    provider, exporter, pipeline = _build_provider(settings, slot, False)  # shut down by atexit
    mark_processor_installed(provider)
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        message = "another TracerProvider was installed concurrently; configure() lost"
        if settings.strict:
            raise ValueError(message)
        _log.warning("configure(): %s; tracing with a private provider instead", message)
        provider.shutdown()
        set_global_propagator(propagator)
        return _build_private(dataclasses.replace(settings, set_global=False), propagator)
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
    _track(handle)
    _global = handle
    return handle


def _reconfigure(
    current: Telemetry, settings: Settings, propagator: TextMapPropagator
) -> Telemetry:
    """Apply new settings to the provider ``configure()`` installed before."""
    if not _same_resource(settings.resource, current._settings.resource):
        message = (
            "configure() already installed the global TracerProvider with resource "
            f"{current._settings.resource!r}; the resource (service name, resource attributes) "
            "cannot change in a running process"
        )
        if settings.strict:
            raise ValueError(message)
        _log.warning("%s: kept it, applied the other settings (strict=True raises)", message)
    settings = dataclasses.replace(settings, resource=current._settings.resource)
    from kilostar_otel.propagation import set_global as set_global_propagator

    pipeline, slot = current._pipeline, current._sampler_slot
    # Both are set on every enabled global handle.
    assert pipeline is not None
    assert slot is not None
    exporter = build_exporter(settings)
    slot.current = _build_sampler(settings)
    pipeline.replace(exporter, settings)
    set_global_propagator(propagator)
    current._settings = settings
    current._exporter = exporter
    current._propagator = propagator
    current._shut_down = False
    return current


# -- recognising our processor on any provider ----------------------------------------------------


def has_kilostar_processor(provider: object) -> bool:
    """True when ``provider`` already has a :class:`KiloStarSpanProcessor` (never add two)."""
    if getattr(provider, PROCESSOR_MARK, False):
        return True
    return any(isinstance(p, KiloStarSpanProcessor) for p in span_processors_of(provider))
