"""The export pipeline ``configure()`` builds: exporter (and its encoder), batch queue, drop count.

:func:`build_exporter` picks the span exporter the settings name; for OTLP/gRPC that is the SDK's
exporter with the faster encoder from :mod:`kilostar_otel._otlp`. :func:`build_batch` wraps it in
the SDK's ``BatchSpanProcessor``, and :class:`_ExportPipeline` is the one span processor the
provider holds for export: it counts the spans the batch queue drops and lets ``configure()``
swap the batch processor when it runs again.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from kilostar_otel._settings import Settings

__all__ = ["_ExportPipeline", "build_batch", "build_exporter", "shutdown_batch"]

# The warning is configure()'s: it keeps its logger name.
_log = logging.getLogger("kilostar_otel.configure")


def build_exporter(settings: Settings) -> SpanExporter | None:
    """The span exporter ``settings`` name (``None`` for ``"none"``); imports it only now."""
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


def build_batch(settings: Settings, exporter: SpanExporter | None) -> BatchSpanProcessor | None:
    """The SDK batch processor in front of ``exporter``, sized by ``settings``."""
    if exporter is None:
        return None  # exporter "none": spans get their ids but are sent nowhere
    return BatchSpanProcessor(
        exporter,
        max_queue_size=settings.max_queue_size,
        schedule_delay_millis=settings.schedule_delay_millis,
        max_export_batch_size=settings.max_export_batch_size,
        export_timeout_millis=settings.export_timeout_millis,
    )


def shutdown_batch(batch: BatchSpanProcessor, timeout_millis: int) -> None:
    """Export what ``batch`` holds and stop it, giving up after ``timeout_millis``."""
    # Since 1.3x the SDK's shutdown takes no timeout but its inner BatchProcessor's does.
    inner = getattr(batch, "_batch_processor", None)
    if inner is not None and hasattr(inner, "shutdown"):
        inner.shutdown(timeout_millis=timeout_millis)
    else:
        batch.shutdown()  # type: ignore[no-untyped-call]


class _ExportPipeline(SpanProcessor):
    """Hands sampled spans to the current batch processor and counts the ones it drops.

    The SDK's batch processor drops a span (with one log line) when its queue is full; here the
    queue is checked first so every drop is counted. :meth:`replace` swaps the batch processor
    when ``configure()`` runs again, so the provider never gets a second export processor.
    (Its name is private for the tests that read processor class names; the module is private.)
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
            shutdown_batch(old, timeout_millis)

    def stop(self, timeout_millis: int) -> None:
        """Flush and shut down the batch processor within ``timeout_millis``; log any drops.

        The batch processor's shutdown exports what is queued and gives up at the timeout; the
        SDK's ``force_flush`` ignores its timeout (and retries for as long as the back end is
        down), so it is not called here.
        """
        if self._batch is not None:
            shutdown_batch(self._batch, timeout_millis)
        if self._dropped:
            _log.warning(
                "kilostar-otel dropped %d span(s) because the export queue was full; raise "
                "max_queue_size (OTEL_BSP_MAX_QUEUE_SIZE) or check that the back end keeps up",
                self._dropped,
            )

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
            shutdown_batch(self._batch, 30000)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued now."""
        return self._batch.force_flush(timeout_millis) if self._batch is not None else True
