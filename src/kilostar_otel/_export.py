"""The export pipeline ``configure()`` builds: exporter (and its encoder), batch queue, drop count.

:func:`build_exporter` picks the span exporter the settings name; for OTLP/gRPC that is the SDK's
exporter with the faster encoder from :mod:`kilostar_otel._otlp`. :func:`build_batch` puts a
:class:`SpanBatch` (queue and export thread) in front of it, and :class:`_ExportPipeline` is the
one span processor the provider holds for export: it counts the spans the batch queue drops and
lets ``configure()`` swap the batch when it runs again.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Any, Final

from opentelemetry.context import (
    _SUPPRESS_INSTRUMENTATION_KEY,
    Context,
    attach,
    detach,
    set_value,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from kilostar_otel._guard import internal_error
from kilostar_otel._settings import Settings

__all__ = [
    "PROCESSOR_MARK",
    "SpanBatch",
    "_ExportPipeline",
    "build_batch",
    "build_exporter",
    "mark_processor_installed",
]

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


def build_batch(settings: Settings, exporter: SpanExporter | None) -> SpanBatch | None:
    """The batch queue and worker in front of ``exporter``, sized by ``settings``."""
    if exporter is None:
        return None  # exporter "none": spans get their ids but are sent nowhere
    return SpanBatch(
        exporter,
        max_queue_size=settings.max_queue_size,
        schedule_delay_millis=settings.schedule_delay_millis,
        max_export_batch_size=settings.max_export_batch_size,
    )


class SpanBatch:
    """A bounded queue of finished spans and the thread that exports them in batches.

    What the SDK's ``BatchSpanProcessor`` does, with less work per span on the thread that ends
    it (no process-id check, no per-span logging or metrics calls; fork safety comes from
    ``os.register_at_fork``): :meth:`put` appends and, once a batch is full, wakes the worker. The
    worker exports a batch whenever one is full, and everything queued every
    ``schedule_delay_millis``. A full queue drops its oldest span (counted in :attr:`dropped`).
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int,
        schedule_delay_millis: int,
        max_export_batch_size: int,
    ) -> None:
        self._exporter = exporter
        self._max_queue_size = max_queue_size
        self._batch_size = max_export_batch_size
        self._delay = schedule_delay_millis / 1000
        self.dropped = 0
        self._drop_lock = threading.Lock()
        self._shutdown = False
        self._gave_up = False  # shutdown timed out: the worker stops after its current batch
        self._start()
        if hasattr(os, "register_at_fork"):
            restart = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: _call_if_alive(restart))

    def _start(self) -> None:
        # deque(maxlen=...): appending to a full queue discards the oldest span.
        self._queue: deque[ReadableSpan] = deque(maxlen=self._max_queue_size)
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._worker_thread = threading.Thread(
            target=self._work, name="kilostar-otel-export", daemon=True
        )
        self._worker_thread.start()

    def _after_fork(self) -> None:
        if not self._shutdown:
            self._start()  # the child has the parent's queue but not its thread: start afresh

    def put(self, span: ReadableSpan) -> None:
        """Queue ``span``; count a drop when the queue is full (its oldest span goes) or stopped."""
        if self._shutdown:
            self._count_drop()
            return
        queue = self._queue
        if len(queue) >= self._max_queue_size:
            self._count_drop()
        queue.append(span)
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def _count_drop(self) -> None:
        with self._drop_lock:
            self.dropped += 1

    def _work(self) -> None:
        while not self._shutdown:
            woken = self._wake.wait(self._delay)
            self._wake.clear()
            if self._shutdown:
                break
            self._export(everything=not woken)
        self._export(everything=True)

    def _export(self, everything: bool) -> None:
        """Export full batches (``everything``: and the rest) from the calling thread."""
        with self._export_lock:
            queue, size = self._queue, self._batch_size
            while queue and (everything or len(queue) >= size) and not self._gave_up:
                batch = [queue.popleft() for _ in range(min(size, len(queue)))]
                token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
                try:
                    self._exporter.export(batch)
                except Exception:
                    _log.exception("exporting %d span(s) failed", len(batch))
                finally:
                    detach(token)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued now (the exporter bounds each request by its timeout)."""
        if self._shutdown:
            return False
        self._export(everything=True)
        return True

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Export what is queued and stop, giving up after ``timeout_millis``; idempotent."""
        if self._shutdown:
            return
        deadline = time.monotonic() + timeout_millis / 1000
        self._shutdown = True
        self._wake.set()
        self._worker_thread.join(timeout_millis / 1000)
        self._gave_up = True
        shutdown: Any = self._exporter.shutdown
        if "timeout_millis" in inspect.signature(shutdown).parameters:
            shutdown(timeout_millis=max(0.0, (deadline - time.monotonic()) * 1000))
        else:
            shutdown()


def _call_if_alive(method: weakref.WeakMethod[Any]) -> None:
    bound = method()
    if bound is not None:
        bound()


class _ExportPipeline(SpanProcessor):
    """Hands sampled spans to the current :class:`SpanBatch` and counts the ones it drops.

    :meth:`replace` swaps the batch when ``configure()`` runs again, so the provider never gets a
    second export processor. (Its name is private for the tests that read processor class names;
    the module is private.)
    """

    def __init__(self, batch: SpanBatch | None, max_queue_size: int) -> None:
        self._dropped_before = 0  # by batches replaced since
        self._set(batch)

    def _set(self, batch: SpanBatch | None) -> None:
        self._batch = batch
        self._put: Any = batch.put if batch is not None else None
        # For tests and diagnostics: the current queue and worker.
        self._queue: deque[ReadableSpan] | None = batch._queue if batch is not None else None
        self._inner: object = batch

    def replace(self, batch: SpanBatch | None, max_queue_size: int, timeout_millis: int) -> None:
        """Send new spans to ``batch``; flush and shut down the previous batch."""
        old = self._batch
        self._set(batch)
        if old is not None:
            old.shutdown(timeout_millis)
            self._dropped_before += old.dropped

    def stop(self, timeout_millis: int) -> None:
        """Flush and shut down the batch within ``timeout_millis``; log any drops.

        The batch's shutdown exports what is queued and gives up at the timeout.
        """
        if self._batch is not None:
            self._batch.shutdown(timeout_millis)
        if self.dropped:
            _log.warning(
                "kilostar-otel dropped %d span(s) because the export queue was full; raise "
                "max_queue_size (OTEL_BSP_MAX_QUEUE_SIZE) or check that the back end keeps up",
                self.dropped,
            )

    @property
    def dropped(self) -> int:
        """Spans dropped so far."""
        batch = self._batch
        return self._dropped_before + (batch.dropped if batch is not None else 0)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span for export."""
        try:
            put = self._put
            if put is None:
                return
            ctx = span.context
            if ctx is not None and ctx.trace_flags.sampled:
                put(span)
        except Exception as exc:
            internal_error("_ExportPipeline.on_end", exc)

    def shutdown(self) -> None:
        """Flush and stop the batch."""
        if self._batch is not None:
            self._batch.shutdown(30000)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued now."""
        return self._batch.force_flush(timeout_millis) if self._batch is not None else True


# -- recognising our processor on any provider ----------------------------------------------------

#: Attribute set on a provider once the KiloStar span processor is added to it.
PROCESSOR_MARK: Final = "_kilostar_processor_installed"


def mark_processor_installed(provider: object) -> None:
    """Remember on ``provider`` that the KiloStar span processor was added to it."""
    try:
        setattr(provider, PROCESSOR_MARK, True)
    except AttributeError:
        pass
