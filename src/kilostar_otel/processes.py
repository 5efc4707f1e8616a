"""Child processes that end without ``atexit``: make them flush their spans first.

A ``multiprocessing`` child (a ``Pool`` worker or a ``Process``) ends with ``os._exit()``, which
skips ``atexit``, so the spans still queued in it would be lost. :func:`flush_at_process_exit`,
passed as a pool's ``initializer`` (or called first thing in a child), registers a
``multiprocessing`` finalizer that flushes them, bounded by ``exit_timeout_millis``. Forked
children need nothing else: ``configure()``'s at-fork hook has already given them their own
export pipeline (see :mod:`kilostar_otel.configure`).
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import threading
from multiprocessing import util
from types import FrameType
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

if TYPE_CHECKING:
    from kilostar_otel.configure import Telemetry

__all__ = ["flush_at_process_exit"]

_log = logging.getLogger(__name__)

#: Finalizers of higher priority run first; this one runs before multiprocessing's own (0-10).
_EXIT_PRIORITY = 100
_FALLBACK_TIMEOUT_MILLIS = 5000
#: How much longer than the flush's own bound a SIGTERM waits for it.
_EXIT_MARGIN_SECONDS = 0.5
_registered_pid: int | None = None  # inherited by a forked child, which registers its own


def _foreign_provider(handles: list[Telemetry]) -> TracerProvider | None:
    """The global SDK provider if no ``configure()`` handle owns it (it is flushed as well)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider) and all(
        h.tracer_provider is not provider for h in handles
    ):
        return provider
    return None


def _flush_everything() -> None:
    """Shut down every ``configure()`` pipeline in this process, and flush a foreign provider."""
    from kilostar_otel.configure import live_handles

    try:
        if signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a pool's terminate() must wait
    except ValueError:
        pass  # not the main thread: the SIGTERM handler set SIG_IGN already, or none was set
    handles = live_handles()
    for handle in handles:
        try:
            handle._exit()
        except Exception:
            _log.exception("kilostar-otel could not flush spans at process exit")
    provider = _foreign_provider(handles)
    if provider is not None:
        try:
            provider.force_flush(_FALLBACK_TIMEOUT_MILLIS)
        except Exception:
            _log.exception("kilostar-otel could not flush spans at process exit")


def _flush_bound_seconds() -> float:
    """How long :func:`_flush_everything` may take: each pipeline's ``exit_timeout_millis``."""
    from kilostar_otel.configure import live_handles

    handles = live_handles()
    millis = sum(h._settings.exit_timeout_millis for h in handles)
    if _foreign_provider(handles) is not None:
        millis += _FALLBACK_TIMEOUT_MILLIS
    return millis / 1e3


def _flush_then_release(done: _thread.LockType) -> None:
    try:
        _flush_everything()
    finally:
        done.release()


def _flush_and_exit(signum: int) -> None:
    """Flush on a thread of its own, wait for it as long as the flush may take, end the process.

    The thread is a bare one: a ``threading.Thread`` first takes ``threading``'s lock, which the
    interrupted main thread may hold (as it may hold the export queue's, inside ``on_end``,
    and never release it).
    """
    try:
        bound = _flush_bound_seconds() + _EXIT_MARGIN_SECONDS
        done = _thread.allocate_lock()
        done.acquire()
        _thread.start_new_thread(_flush_then_release, (done,))
        done.acquire(timeout=bound)
    finally:
        os._exit(128 + signum)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Flush and leave: raising SystemExit instead could unwind through a lock the pool's queues
    # hold (a signal between acquiring and the ``with`` block leaks it) and hang the pool.
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a pool's terminate() must wait
    finally:
        _flush_and_exit(signum)


def flush_at_process_exit() -> None:
    """Flush this process's spans when it ends, even through ``os._exit()`` (``multiprocessing``).

    Use it as the initializer of a pool, ``Pool(initializer=flush_at_process_exit)``, or call it
    at the start of a child process (or of your own initializer). When the child ends normally
    (the pool is closed and joined) or is terminated (``Pool.terminate()``, the end of a
    ``with Pool(...)`` block: SIGTERM, which flushes and then exits if SIGTERM had no handler
    yet), every ``configure()`` pipeline is flushed and shut down within its
    ``exit_timeout_millis``. SIGTERM ends the process by then (plus half a second) even when it
    interrupts a span being queued (that pipeline's queued spans are lost then). Idempotent per
    process; never raises.
    """
    global _registered_pid
    try:
        if _registered_pid == os.getpid():
            return
        util.Finalize(None, _flush_everything, exitpriority=_EXIT_PRIORITY)
        _registered_pid = os.getpid()
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
    except Exception:
        _log.exception("kilostar-otel could not register the flush at process exit")
