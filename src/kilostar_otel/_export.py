"""The export pipeline ``configure()`` builds: exporter (and its encoder), batch queue, counts.

:func:`build_exporter` picks the span exporter the settings name; for OTLP/gRPC that is the SDK's
exporter with the faster encoder from :mod:`kilostar_otel._otlp`. :class:`_ExportPipeline` is the
one span processor the provider holds for export: its own batch queue and worker thread (spans
for the gRPC exporter are encoded as they end), bounded in spans and in bytes, with exact counts of
what it drops, what the back end accepted and what was lost in failed exports; ``configure()``
swaps its exporter when it runs again, and a forked child gets a fresh one (own connections).
"""

from __future__ import annotations

import inspect
import logging
import operator
import sys
import threading
import time
from collections import deque
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from kilostar_otel._guard import internal_error
from kilostar_otel._internals import (
    WIRE_RESOURCE,
    WIRE_SAMPLED,
    WIRE_SCOPE,
    attribute_items,
    span_wire_fields,
)
from kilostar_otel._otlp import (
    EncodedSpans,
    UnsupportedSpanError,
    encode_fields,
    encode_span,
    encode_span_with_sdk,
    join_queued,
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


def span_bytes(fields: tuple[Any, ...]) -> int:
    """An estimate of the memory a queued span holds: its strings, plus a fixed overhead.

    Runs in ``on_end`` for every sampled span (exporters other than OTLP/gRPC), on the span's
    ``span_wire_fields`` (the SDK's properties copy events and links).
    """
    (_, _, _, _, _, name, _, _, _, status, attributes, _, events, _, links, *_) = fields
    size = SPAN_OVERHEAD_BYTES + len(name or "") + _attributes_bytes(attributes)
    for event in events:
        size += _ITEM_OVERHEAD_BYTES + len(event.name or "")
        size += _attributes_bytes(event.attributes)
    for link in links:
        size += _ITEM_OVERHEAD_BYTES + _attributes_bytes(link.attributes)
    description = status.description if status is not None else None
    return size + (len(description) if description else 0)


#: Exporters inherited from the parent in a forked child: never used, never freed (see
#: :meth:`_ExportPipeline.after_fork`).
_INHERITED_EXPORTERS: list[SpanExporter] = []
#: What a queued, already encoded span holds beyond its bytes: the entry tuple, the bytes object.
ENTRY_OVERHEAD_BYTES = 128

# An entry of the queue: (bytes it holds, payload, resource, scope). The payload is the span
# encoded as OTLP (gRPC exporter: resource and scope group it at send time) or the span itself
# (any other exporter: resource and scope are None).
_Entry = tuple[int, Any, Any, Any]
_entry_size: Final = operator.itemgetter(0)


def _shutdown_exporter(exporter: SpanExporter, timeout_millis: float) -> None:
    """Shut ``exporter`` down (within ``timeout_millis`` if it takes one); never raises."""
    try:
        shutdown = exporter.shutdown
        try:
            takes_timeout = "timeout_millis" in inspect.signature(shutdown).parameters
        except (TypeError, ValueError):
            takes_timeout = False
        if takes_timeout:
            shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            shutdown()
    except Exception as exc:
        internal_error("exporter.shutdown", exc)


class _ExportPipeline(SpanProcessor):
    """The batch export of sampled spans, within a span and a byte budget, with exact counts.

    ``on_end`` admits a span into the queue: for the OTLP/gRPC exporter it is encoded there and
    then (:func:`~kilostar_otel._otlp.encode_span`: a few microseconds, and the span object dies
    at once instead of aging through the garbage collector's generations); for any other
    exporter the span itself is queued. While the queue holds ``max_queue_size`` entries or the
    new one would pass ``max_queue_bytes``, the oldest are dropped (one always fits an empty
    queue). A worker thread exports a batch when ``max_export_batch_size`` are queued and
    everything every ``schedule_delay_millis``; one export runs at a time. Every span ends up
    counted once: delivered (the back end accepted it), failed (lost after the exporter's
    retries), dropped, or still queued / in flight. :meth:`replace` swaps the exporter when
    ``configure()`` runs again; :meth:`after_fork` gives a forked child a fresh pipeline. (Its
    name is private for the tests that read processor class names.)
    """

    def __init__(self, exporter: SpanExporter | None, settings: Settings) -> None:
        self._fresh(exporter, settings)

    def _fresh(self, exporter: SpanExporter | None, settings: Settings) -> None:
        self._lock = threading.Lock()  # the queue and the counts
        self._send_lock = threading.Lock()  # one export at a time: the worker's or a flush's
        self._wake = threading.Event()
        self._queue: deque[_Entry] = deque()
        self.dropped = 0  #: spans dropped: queue full (spans or bytes), shut down, lost at exit
        self.delivered = 0  #: spans the back end accepted
        self.failed = 0  #: spans in exports that failed (after the exporter's retries)
        self.queued_bytes = 0  #: bytes the queued spans hold (encoded, or estimated)
        self.in_flight = 0  #: spans in an export that has not returned yet
        self.cut = 0  #: spans sent as a safe copy (bad text escaped, long values cut)
        self.split = 0  #: batches refused at once and sent again in two halves
        self._stopped = False
        self._closing = False
        self._worker: threading.Thread | None = None
        self._use(exporter, settings)
        self._start_worker()

    def _use(self, exporter: SpanExporter | None, settings: Settings) -> None:
        self._settings = settings
        self._exporter = exporter
        self._encoded = _encodes_as_spans_end(exporter)
        self._max_queue_size = settings.max_queue_size
        self._max_queue_bytes = settings.max_queue_bytes
        self._batch_size = settings.max_export_batch_size
        self._max_span_bytes = settings.max_span_bytes

    @property
    def exporter(self) -> SpanExporter | None:
        """The exporter spans go to now."""
        return self._exporter

    def replace(self, exporter: SpanExporter | None, settings: Settings) -> None:
        """Send new spans to ``exporter``; export what is queued to the previous one, shut it down.

        A first pipeline without an exporter gets its worker now.
        """
        with self._send_lock:
            with self._lock:
                old_exporter, old_encoded = self._exporter, self._encoded
                left = list(self._queue)
                self._queue.clear()
                self.queued_bytes -= sum(entry[0] for entry in left)
                self.in_flight += len(left)
                self._use(exporter, settings)
            if old_exporter is not None:
                for start in range(0, len(left), self._batch_size):
                    batch = left[start : start + self._batch_size]
                    self._deliver(old_exporter, old_encoded, batch)
        if old_exporter is not None:
            _shutdown_exporter(old_exporter, settings.export_timeout_millis)
        self._start_worker()

    def _start_worker(self) -> None:
        """Start the worker thread once there is an exporter (and none runs yet)."""
        if self._exporter is not None and self._worker is None:
            self._worker = threading.Thread(
                target=self._run, name="kilostar-otel export", daemon=True
            )
            self._worker.start()

    def after_fork(self, exporter: SpanExporter | None) -> None:
        """In a forked child: forget the inherited queue and worker, start afresh with counts 0.

        ``exporter`` is a new one, so the child never uses the parent's connections. The
        parent's exporter is kept, unused, for the life of the child: freeing it would tear down
        its gRPC channel in the child, which crashes a process without gRPC's fork support.
        """
        if self._exporter is not None:
            _INHERITED_EXPORTERS.append(self._exporter)
        self._fresh(exporter, self._settings)

    # -- the span processor -----------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span; if the queue is full (spans or bytes), drop the oldest ones."""
        try:
            if self._exporter is None:
                return
            fields = span_wire_fields(span)
            if not fields[WIRE_SAMPLED]:
                return
            if not self._encoded:
                self._admit((span_bytes(fields), span, None, None))
                return
            try:
                payload = encode_fields(fields)
            except Exception:  # only the SDK's encoder handles it, or it is shaped unlike a span
                payload = self._encode_other_way(span)
            if len(payload) > self._max_span_bytes:
                payload = self._encode_other_way(span, len(payload))
            self._admit(
                (
                    len(payload) + ENTRY_OVERHEAD_BYTES,
                    payload,
                    fields[WIRE_RESOURCE],
                    fields[WIRE_SCOPE],
                )
            )
        except Exception as exc:
            internal_error("_ExportPipeline.on_end", exc)

    def _encode_other_way(self, span: ReadableSpan, size: int = 0) -> bytes:
        """A span the fast encoder refused, or one over ``max_span_bytes`` (``size``): a poison
        span (text that cannot be encoded, too large) becomes a safe, marked copy; any other
        goes through the SDK's encoder (a value only the SDK handles its way)."""
        (safe,), changed = make_safe([span], [size], self._settings.max_span_bytes)
        if not changed:  # the fast encoder refused this very span already
            return encode_span_with_sdk(span)
        with self._lock:
            self.cut += 1
        try:
            return encode_span(safe)
        except UnsupportedSpanError:
            return encode_span_with_sdk(safe)

    def _admit(self, entry: _Entry) -> None:
        size = entry[0]
        with self._lock:
            if self._stopped:
                self.dropped += 1
                return
            queue = self._queue
            while queue and (
                len(queue) >= self._max_queue_size
                or self.queued_bytes + size > self._max_queue_bytes
            ):
                self.queued_bytes -= queue.popleft()[0]  # the oldest
                self.dropped += 1
            queue.append(entry)
            self.queued_bytes += size
            full = len(queue) == self._batch_size
        if full:
            self._wake.set()

    def shutdown(self) -> None:
        """Export what is queued and stop within ``exit_timeout_millis`` (the provider calls
        this at exit); what is still queued then counts as dropped."""
        self.stop(self._settings.exit_timeout_millis, warn=False)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued now; False if an export failed or ``timeout_millis`` ran out."""
        if self._exporter is None:
            return True
        return self._export_queued(
            everything=True, deadline=time.monotonic() + timeout_millis / 1e3
        )

    # -- the worker -------------------------------------------------------------------------------

    def _run(self) -> None:
        wake = self._wake
        due = time.monotonic() + self._settings.schedule_delay_millis / 1e3
        while not self._closing:
            wake.wait(max(0.0, due - time.monotonic()))
            wake.clear()
            if self._closing:
                break
            timer = time.monotonic() >= due
            try:
                self._export_queued(everything=timer)
            except Exception as exc:
                internal_error("_ExportPipeline worker", exc)
            if timer:
                due = time.monotonic() + self._settings.schedule_delay_millis / 1e3
        try:
            self._export_queued(everything=True)  # stopping: export what is left
        except Exception as exc:
            internal_error("_ExportPipeline worker", exc)

    def _export_queued(self, everything: bool, deadline: float | None = None) -> bool:
        """Export batches while one is full (or, ``everything``, until the queue is empty).

        True if every export succeeded and the deadline (a ``time.monotonic()``) was kept.
        """
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._send_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        ok = True
        try:
            while True:
                with self._lock:
                    queued = len(self._queue)
                    if not queued or (not everything and queued < self._batch_size):
                        break
                    take = min(queued, self._batch_size)
                    if take == queued:
                        batch = list(self._queue)
                        self._queue.clear()
                    else:
                        popleft = self._queue.popleft
                        batch = [popleft() for _ in range(take)]
                    self.queued_bytes -= sum(map(_entry_size, batch))
                    self.in_flight += take
                    exporter, encoded = self._exporter, self._encoded
                if exporter is None:  # replaced by "none": nothing to send them to
                    self._exported(take, False)
                    ok = False
                    continue
                ok = self._deliver(exporter, encoded, batch) and ok
                if deadline is not None and time.monotonic() > deadline:
                    ok = False
                    break
        finally:
            self._send_lock.release()
        return ok

    def _deliver(self, exporter: SpanExporter, encoded: bool, batch: list[_Entry]) -> bool:
        """Send ``batch`` and count it delivered or failed. A batch of large spans refused at
        once (too large for the back end) is sent again as two halves, each once."""
        settings = self._settings
        started = time.monotonic()
        ok = self._send(exporter, encoded, batch)
        if (
            not ok
            and len(batch) > 1
            and sum(entry[0] for entry in batch) > settings.max_span_bytes
            and time.monotonic() - started
            < SPLIT_IF_FAILED_WITHIN * (settings.timeout or _DEFAULT_EXPORT_TIMEOUT_SECONDS)
        ):
            half = len(batch) // 2
            first = self._send(exporter, encoded, batch[:half])
            second = self._send(exporter, encoded, batch[half:])
            self._exported(half, first)
            self._exported(len(batch) - half, second)
            with self._lock:
                self.split += 1
            return first and second
        self._exported(len(batch), ok)
        return ok

    def _send(self, exporter: SpanExporter, encoded: bool, batch: list[_Entry]) -> bool:
        try:
            if encoded:
                data: Any = EncodedSpans(join_queued(batch), len(batch))
            else:
                spans, changed = make_safe(
                    [e[1] for e in batch], [e[0] for e in batch], self._settings.max_span_bytes
                )
                if changed:
                    with self._lock:
                        self.cut += changed
                data = spans
            return exporter.export(data) is SpanExportResult.SUCCESS
        except Exception:
            _log.exception(
                "kilostar-otel: the exporter raised while exporting %d span(s)", len(batch)
            )
            return False

    def _exported(self, count: int, ok: bool) -> None:
        with self._lock:
            self.in_flight -= count
            if ok:
                self.delivered += count
            else:
                self.failed += count

    # -- stopping ---------------------------------------------------------------------------------

    def stop(self, timeout_millis: int, warn: bool = True) -> None:
        """Export what is queued and stop within ``timeout_millis``; log any loss (``warn``).

        New spans are dropped (and counted) from now on. The worker exports what is queued; at
        the timeout the exporter is shut down (which ends its retries), and what is still queued
        then counts as dropped.
        """
        deadline = time.monotonic() + timeout_millis / 1e3
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._closing = True
        self._wake.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = len(self._queue)
            self._queue.clear()
            self.dropped += left
            self.queued_bytes = 0
        if self._exporter is not None:
            _shutdown_exporter(self._exporter, max(0.0, deadline - time.monotonic()) * 1e3)
        if warn and (self.dropped or self.failed or self.in_flight):
            _log.warning(
                "kilostar-otel lost %d span(s): %d dropped (queue full or shutting down; see "
                "max_queue_size and max_queue_bytes), %d in failed exports and %d in an export "
                "still unanswered at shutdown; check that the back end is reachable and keeps up",
                self.dropped + self.failed + self.in_flight,
                self.dropped,
                self.failed,
                self.in_flight,
            )


def _encodes_as_spans_end(exporter: SpanExporter | None) -> bool:
    """Whether spans for ``exporter`` are encoded as they end: it is the fast OTLP/gRPC one
    (looked for only once that exporter's module is loaded: nothing heavy is imported here)."""
    if exporter is None or _GRPC_EXPORTER_MODULE not in sys.modules:
        return False
    from kilostar_otel._otlp import grpc_span_exporter_class

    return isinstance(exporter, grpc_span_exporter_class())


_GRPC_EXPORTER_MODULE: Final = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


# -- recognising our processor on any provider ----------------------------------------------------

#: Attribute set on a provider once the KiloStar span processor is added to it.
PROCESSOR_MARK: Final = "_kilostar_processor_installed"


def mark_processor_installed(provider: object) -> None:
    """Remember on ``provider`` that the KiloStar span processor was added to it."""
    try:
        setattr(provider, PROCESSOR_MARK, True)
    except AttributeError:
        pass
