"""Flushing: the spans of traced calls leave the worker before Ray can end it.

Ray ends idle pool workers and retired ones, and actors are terminated; spans still queued in
the batch processor then would be lost if the worker did not export them first. When a traced
call ends it asks the :class:`Flusher` for an export, in one of three modes
(``KILOSTAR_OTEL_RAY_FLUSH``):

- ``idle`` (the default): the export runs once the worker has had no call for
  :data:`IDLE_DELAY` seconds, on the flusher's thread; back-to-back calls pay nothing for it,
  and it runs long before Ray reaps an idle worker. A graceful exit (actor termination, a retired
  worker) exports what is left through ``configure()``'s exit handler.
- ``after``: the export starts as the call ends and runs while the result goes back.
- ``wait``: the call waits (bounded by ``KILOSTAR_OTEL_RAY_FLUSH_TIMEOUT``) until its spans
  are exported, so even a worker killed the moment the result arrives (``ray.kill``) has
  delivered them.
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
    "DEFAULT_FLUSH_MODE",
    "DEFAULT_FLUSH_TIMEOUT",
    "FLUSH_MODES",
    "IDLE_DELAY",
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
#: When a traced call's spans are exported (see the module docstring).
FLUSH_MODES: Final = ("idle", "after", "wait")
DEFAULT_FLUSH_MODE: Final = "idle"
#: Seconds without a call after which the ``idle`` mode exports (Ray reaps after one second).
IDLE_DELAY: Final = 0.05
#: The instrumentation scope of the call spans (whose ends flush on their own).
INSTRUMENTATION: Final = "kilostar_otel.integrations.ray"


class Flushing:
    """This process's flush settings (set by ``setup_worker``)."""

    timeout: float = DEFAULT_FLUSH_TIMEOUT
    mode: str = DEFAULT_FLUSH_MODE
    #: True once :class:`FlushLocalRoots` is installed on this process's provider.
    local_roots = False


def tracing_configured() -> bool:
    """Whether an SDK tracer provider is installed in this process."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


class Flusher:
    """Exports finished spans on request from one background thread.

    :meth:`flush` waits until an export that started after the request has finished (so it
    covers the caller's spans), or until the timeout: a dead collector slows each call by at
    most the timeout, and never piles up threads. :meth:`start` asks for an export without
    waiting; :meth:`when_idle` asks for one once no request has come for ``idle_delay`` seconds.
    """

    def __init__(self, export: Callable[[], object], idle_delay: float = IDLE_DELAY) -> None:
        self._export = export
        self._idle_delay = idle_delay
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._started_at = 0.0
        self._busy = False
        self._idle_at: float | None = None  # when to export if nothing else asks before
        self._thread: threading.Thread | None = None

    def _request(self) -> int:
        """Under the lock: count a request and make sure the thread runs; the ticket."""
        self._requested += 1
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="kilostar-otel-ray-flush", daemon=True
            )
            self._thread.start()
        self._cond.notify_all()
        return self._requested

    def flush(self, timeout: float) -> bool:
        """Request an export and wait for it, at most ``timeout`` seconds; True if it finished."""
        with self._cond:
            if self._busy and time.monotonic() - self._started_at > timeout:
                # The exporter is stuck (collector down): do not make every call wait for it.
                return False
            ticket = self._request()
            return self._cond.wait_for(lambda: self._done >= ticket, timeout)

    def start(self) -> None:
        """Request an export and return at once."""
        with self._cond:
            self._request()

    def when_idle(self) -> None:
        """Export once no call has asked for ``idle_delay`` seconds (each call moves it on)."""
        due = time.monotonic() + self._idle_delay
        with self._cond:
            armed = self._idle_at is not None
            self._idle_at = due
            if not armed:  # the thread sleeps until asked: wake it to start the idle clock
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="kilostar-otel-ray-flush", daemon=True
                    )
                    self._thread.start()
                self._cond.notify_all()

    def _due(self) -> bool:
        """Under the lock: an export was asked for, or the idle time has come."""
        if self._requested > self._done:
            return True
        return self._idle_at is not None and time.monotonic() >= self._idle_at

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    idle_at = self._idle_at
                    self._cond.wait(None if idle_at is None else idle_at - time.monotonic())
                target = self._requested
                self._idle_at = None
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
    """Export this process's finished spans as ``Flushing.mode`` says (the end of a call)."""
    timeout = Flushing.timeout
    if timeout > 0 and tracing_configured():
        mode = Flushing.mode
        if mode == "idle":
            _flusher.when_idle()
        elif mode == "after":
            _flusher.start()
        else:
            _flusher.flush(timeout)


async def flush_async() -> None:
    """:func:`flush` for async calls: a waiting flush waits in a thread, so an async actor keeps
    serving other calls meanwhile."""
    if Flushing.timeout > 0 and tracing_configured():
        if Flushing.mode != "wait":
            flush()  # returns at once
            return
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
