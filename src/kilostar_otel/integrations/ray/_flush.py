"""Flushing: each traced call exports its spans before its result goes back to the caller.

Ray may kill pool workers without running ``atexit``, so spans still queued in the batch
processor when a worker dies would be lost. A call asks the :class:`Flusher` for an export and
waits a bounded time for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Final

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from kilostar_otel._guard import internal_error

__all__ = [
    "DEFAULT_FLUSH_TIMEOUT",
    "INSTRUMENTATION",
    "FlushLocalRoots",
    "Flusher",
    "Flushing",
    "flush",
    "flush_async",
    "tracing_configured",
]

#: Longest a traced call waits for its spans to be exported (seconds; 0 turns flushing off).
DEFAULT_FLUSH_TIMEOUT: Final = 5.0
#: The instrumentation scope of the call spans (whose ends flush on their own).
INSTRUMENTATION: Final = "kilostar_otel.integrations.ray"


class Flushing:
    """This process's flush settings (set by ``setup_worker``)."""

    timeout: float = DEFAULT_FLUSH_TIMEOUT
    #: True once :class:`FlushLocalRoots` is installed on this process's provider.
    local_roots = False


def tracing_configured() -> bool:
    """Whether an SDK tracer provider is installed in this process."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


class Flusher:
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
        """Request an export and wait for it, at most ``timeout`` seconds; True if it finished."""
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
            except Exception as exc:  # an exporter failure must not kill the flusher
                internal_error("ray flusher", exc)
            with self._cond:
                self._busy = False
                self._done = target
                self._cond.notify_all()


def _force_flush_global() -> None:
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush is not None:
        flush()


_flusher = Flusher(_force_flush_global)


def flush() -> None:
    """Export this process's finished spans now (bounded by ``Flushing.timeout``)."""
    timeout = Flushing.timeout
    if timeout > 0 and tracing_configured():
        _flusher.flush(timeout)


async def flush_async() -> None:
    """:func:`flush` from a thread: an async actor keeps serving other calls meanwhile."""
    if Flushing.timeout > 0 and tracing_configured():
        await asyncio.get_running_loop().run_in_executor(None, flush)


class FlushLocalRoots(SpanProcessor):
    """Flushes when a span with no parent in this process ends: the outermost span of a call.

    Our own call spans flush themselves (without blocking an async actor's loop); this covers
    the spans around them or instead of them: Ray's own ``ray.remote_worker`` span when Ray's
    tracing hook is on, and spans that code in plain ``ray.remote`` functions starts.
    """

    def on_end(self, span: ReadableSpan) -> None:
        """Flush if ``span`` is a local root that is not one of our call spans."""
        try:
            scope = span.instrumentation_scope
            if scope is not None and scope.name == INSTRUMENTATION:
                return
            parent = span.parent
            if parent is None or parent.is_remote:
                flush()
        except Exception as exc:  # a span processor never raises into the traced code
            internal_error("FlushLocalRoots.on_end", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return True
