"""The export pipeline ``configure()`` builds: exporter (and its encoder), batch queue, counts.

:func:`build_exporter` picks the span exporter the settings name; for OTLP/gRPC that is the SDK's
exporter with the faster encoder from :mod:`kilostar_otel._otlp`. :class:`_ExportPipeline` is the
one span processor the provider holds for export: it admits a span into the SDK's
``BatchSpanProcessor`` only while the queue has room in spans and in bytes, counts what it drops,
what the back end accepted and what was lost in failed exports, lets ``configure()`` swap the
batch processor when it runs again, and builds a fresh one (own connections) in a forked child.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from kilostar_otel._guard import internal_error
from kilostar_otel._internals import (
    abandon_batch,
    attribute_items,
    batch_queue,
    batch_stopped,
    bounded_list_items,
    finished_span_fields,
    shutdown_batch,
)
from kilostar_otel._poison import make_safe
from kilostar_otel._settings import Settings

__all__ = [
    "PROCESSOR_MARK",
    "_ExportPipeline",
    "build_exporter",
    "mark_processor_installed",
    "span_bytes",
]

# The warning is configure()'s: it keeps its logger name.
_log = logging.getLogger("kilostar_otel.configure")

#: What a span costs before its strings: the span object, its context, times, status, resource.
SPAN_OVERHEAD_BYTES = 1024
_ITEM_OVERHEAD_BYTES = 64  # one attribute, event or link: the dict entry, the str/int objects
#: A failed batch is split in two and each half sent once only if it failed within this share
#: of the exporter's timeout (a 413 answers at once; an unreachable back end fails only after
#: retrying for the whole timeout).
SPLIT_IF_FAILED_WITHIN = 0.5
_DEFAULT_EXPORT_TIMEOUT_SECONDS = 10.0


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


def _value_bytes(value: object) -> int:
    if type(value) is str or type(value) is bytes:
        return len(value)
    if isinstance(value, (tuple, list)):
        return sum(_value_bytes(item) + 8 for item in value)
    return 8


def _attributes_bytes(attributes: Any) -> int:
    if not attributes:
        return 0
    size = 0
    for key, value in attribute_items(attributes):
        size += _ITEM_OVERHEAD_BYTES + len(key)
        size += len(value) if type(value) is str else _value_bytes(value)
    return size


def span_bytes(span: ReadableSpan) -> int:
    """An estimate of the memory a queued span holds: its strings, plus a fixed overhead.

    Runs in ``on_end`` for every sampled span, so it reads the finished span's fields directly
    (the SDK's properties copy events and links).
    """
    (_, _, name, _, _, _, status, attributes, events, links) = finished_span_fields(span)
    size = SPAN_OVERHEAD_BYTES + len(name or "") + _attributes_bytes(attributes)
    if events:
        for event in bounded_list_items(events):
            size += _ITEM_OVERHEAD_BYTES + len(event.name or "")
            size += _attributes_bytes(event.attributes)
    if links:
        for link in bounded_list_items(links):
            size += _ITEM_OVERHEAD_BYTES + _attributes_bytes(link.attributes)
    description = status.description if status is not None else None
    return size + (len(description) if description else 0)


def _count_cut(
    spans: Sequence[ReadableSpan], sizes: Sequence[int], pipeline: _ExportPipeline
) -> tuple[Sequence[ReadableSpan], int]:
    safe, changed = make_safe(spans, sizes, pipeline._settings.max_span_bytes)
    return safe, pipeline.cut + changed


class _CountingExporter(SpanExporter):
    """Wraps the real exporter: the spans of each batch leave the byte budget and are counted
    as delivered (the back end accepted them) or failed (lost after the exporter's retries)."""

    def __init__(self, exporter: SpanExporter, pipeline: _ExportPipeline) -> None:
        self.exporter = exporter
        self._pipeline = pipeline

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export through the wrapped exporter and count the outcome.

        Poison spans (text that cannot be encoded, a span over ``max_span_bytes``) are replaced
        by safe, marked copies first, so they cannot lose the batch. If a batch of large spans
        is still refused at once (too large for the back end), each half is sent once.
        """
        pipeline = self._pipeline
        sizes = pipeline._dequeued(spans)
        result = SpanExportResult.FAILURE
        try:
            spans, pipeline.cut = _count_cut(spans, sizes, pipeline)
            started = time.monotonic()
            result = self._send(spans)
            if (
                result is not SpanExportResult.SUCCESS
                and len(spans) > 1
                and sum(sizes) > pipeline._settings.max_span_bytes
                and time.monotonic() - started
                < SPLIT_IF_FAILED_WITHIN
                * (pipeline._settings.timeout or _DEFAULT_EXPORT_TIMEOUT_SECONDS)
            ):
                half = len(spans) // 2
                first, second = self._send(spans[:half]), self._send(spans[half:])
                pipeline._exported(half, first is SpanExportResult.SUCCESS)
                pipeline._exported(len(spans) - half, second is SpanExportResult.SUCCESS)
                pipeline.split += 1
                spans = ()  # counted above
                result = first if first is not SpanExportResult.SUCCESS else second
        finally:
            if spans:
                pipeline._exported(len(spans), result is SpanExportResult.SUCCESS)
        return result

    def _send(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            return self.exporter.export(spans)
        except Exception:
            _log.exception(
                "kilostar-otel: the exporter raised while exporting %d span(s)", len(spans)
            )
            return SpanExportResult.FAILURE

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Shut the wrapped exporter down (within ``timeout_millis`` if it takes one)."""
        shutdown = self.exporter.shutdown
        try:
            takes_timeout = "timeout_millis" in inspect.signature(shutdown).parameters
        except (TypeError, ValueError):
            takes_timeout = False
        if takes_timeout:
            shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped exporter."""
        return self.exporter.force_flush(timeout_millis)


class _ExportPipeline(SpanProcessor):
    """Admits sampled spans to the current batch processor within a span and a byte budget.

    A new span always enters the queue; while the queue holds ``max_queue_size`` spans or the
    new span would pass ``max_queue_bytes`` estimated bytes (:func:`span_bytes`), the oldest
    queued spans are dropped (a span always fits an empty queue). The drops, the counts and the
    hand-over happen under one lock and only spans this processor removed are counted, so the
    SDK's queue never overflows on its own and every count is exact. A wrapper
    around the exporter counts spans delivered and spans lost in failed exports. :meth:`replace`
    swaps the batch processor when ``configure()`` runs again; :meth:`after_fork` gives a forked
    child a fresh one. (Its name is private for the tests that read processor class names.)
    """

    def __init__(
        self, exporter: SpanExporter | None, settings: Settings, exporter_kind: str = ""
    ) -> None:
        self._lock = threading.Lock()
        self.dropped = 0  #: spans dropped: queue full (spans or bytes), shut down, lost at exit
        self.delivered = 0  #: spans the back end accepted
        self.failed = 0  #: spans in exports that failed (after the exporter's retries)
        self.queued_bytes = 0  #: estimated bytes of the spans queued now
        self.in_flight = 0  #: spans in an export that has not returned yet
        self.cut = 0  #: spans sent as a safe copy (bad text escaped, long values cut)
        self.split = 0  #: batches refused at once and sent again in two halves
        self._sizes: dict[int, int] = {}
        self._batch: BatchSpanProcessor | None = None
        self._queue: deque[Any] | None = None
        self._inner: object = None
        self._set(exporter, settings)

    # -- building and swapping the batch processor ------------------------------------------------

    def _set(self, exporter: SpanExporter | None, settings: Settings) -> None:
        self._settings = settings
        self._exporter = exporter
        self._max_queue_size = settings.max_queue_size
        self._max_queue_bytes = settings.max_queue_bytes
        if exporter is None:  # exporter "none": spans get their ids but are sent nowhere
            batch: BatchSpanProcessor | None = None
        else:
            batch = BatchSpanProcessor(
                _CountingExporter(exporter, self),
                max_queue_size=settings.max_queue_size,
                schedule_delay_millis=settings.schedule_delay_millis,
                max_export_batch_size=settings.max_export_batch_size,
                export_timeout_millis=settings.export_timeout_millis,
            )
        # Without a visible queue (an SDK that moved it) the budget cannot be applied.
        inner, queue = batch_queue(batch) if batch is not None else (None, None)
        with self._lock:
            self._batch = batch
            self._queue = queue
            self._inner = inner

    @property
    def exporter(self) -> SpanExporter | None:
        """The exporter spans go to now."""
        return self._exporter

    def replace(self, exporter: SpanExporter | None, settings: Settings) -> None:
        """Send new spans to a new batch processor; flush and shut down the previous one."""
        old, old_queue = self._batch, self._queue
        self._set(exporter, settings)
        if old is not None:
            shutdown_batch(old, settings.export_timeout_millis)
            self._count_left(old_queue)

    def after_fork(self, exporter: SpanExporter | None) -> None:
        """In a forked child: abandon the inherited batch processor, start afresh with counts 0.

        ``exporter`` is a new one, so the child never uses the parent's connections.
        """
        self._lock = threading.Lock()  # another thread may have held it at the fork
        old = self._batch
        if old is not None:
            abandon_batch(old)
        self.dropped = self.delivered = self.failed = self.queued_bytes = self.in_flight = 0
        self._sizes = {}
        self._set(exporter, self._settings)

    def stop(self, timeout_millis: int) -> None:
        """Flush and shut down the batch processor within ``timeout_millis``; log any loss.

        The batch processor's shutdown exports what is queued and gives up at the timeout (what
        is still queued then counts as dropped); the SDK's ``force_flush`` ignores its timeout
        (and retries for as long as the back end is down), so it is not called here.
        """
        if self._batch is not None:
            shutdown_batch(self._batch, timeout_millis)
            self._count_left(self._queue)
        if self.dropped or self.failed or self.in_flight:
            _log.warning(
                "kilostar-otel lost %d span(s): %d dropped (queue full or shutting down; see "
                "max_queue_size and max_queue_bytes), %d in failed exports and %d in an export "
                "still unanswered at shutdown; check that the back end is reachable and keeps up",
                self.dropped + self.failed + self.in_flight,
                self.dropped,
                self.failed,
                self.in_flight,
            )

    def _count_left(self, queue: deque[Any] | None) -> None:
        """Count what a stopped batch processor still holds as dropped, and free its bytes."""
        if not queue:
            return
        with self._lock:
            left = list(queue)
            queue.clear()
            self.dropped += len(left)
            for span in left:
                self.queued_bytes -= self._sizes.pop(id(span), 0)

    # -- counting ---------------------------------------------------------------------------------

    def _dequeued(self, spans: Sequence[ReadableSpan]) -> list[int]:
        with self._lock:
            known = [self._sizes.pop(id(span), None) for span in spans]
            self.queued_bytes -= sum(size for size in known if size is not None)
            self.in_flight += len(spans)
        return [span_bytes(s) if n is None else n for s, n in zip(spans, known, strict=True)]

    def _exported(self, count: int, ok: bool) -> None:
        with self._lock:
            self.in_flight -= count
            if ok:
                self.delivered += count
            else:
                self.failed += count

    def _stopped(self) -> bool:
        return batch_stopped(self._inner)

    # -- the span processor -----------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span; if the queue is full (spans or bytes), drop the oldest ones."""
        try:
            self._admit(span)
        except Exception as exc:
            internal_error("_ExportPipeline.on_end", exc)

    def _admit(self, span: ReadableSpan) -> None:
        batch = self._batch
        ctx = span.context
        if batch is None or ctx is None or not ctx.trace_flags.sampled:
            return
        queue = self._queue
        if queue is None:
            batch.on_end(span)  # an SDK without a visible queue: no budget, no counts
            return
        size = span_bytes(span)
        with self._lock:
            if self._stopped():
                self.dropped += 1
                return
            sizes = self._sizes
            # The worker may take spans meanwhile: only what is popped here is counted.
            while queue and (
                len(queue) >= self._max_queue_size
                or self.queued_bytes + size > self._max_queue_bytes
            ):
                try:
                    oldest = queue.pop()  # the oldest is at the right (the SDK appends left)
                except IndexError:
                    break
                self.dropped += 1
                self.queued_bytes -= sizes.pop(id(oldest), 0)
            sizes[id(span)] = size
            self.queued_bytes += size
            batch.on_end(span)

    def shutdown(self) -> None:
        """Flush and stop the batch processor within ``exit_timeout_millis`` (the provider
        calls this at exit); what is still queued then counts as dropped."""
        if self._batch is not None:
            shutdown_batch(self._batch, self._settings.exit_timeout_millis)
            self._count_left(self._queue)

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
