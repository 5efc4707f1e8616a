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
#: Held by whoever flushes at exit first (finalizer or SIGTERM): a second one waits for it.
_exiting = _thread.allocate_lock()
#: This process's SIGTERM watcher: the pipe its thread reads (see :func:`_watch_sigterm`).
_watch_fds: tuple[int, int] | None = None
_fork_hook_registered = False
#: Threads forking now that blocked SIGTERM for it (see :func:`_before_fork`).
_blocked_for_fork: set[int] = set()


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


def _flush_at_exit() -> None:
    """The finalizer: flush, unless a SIGTERM's flush began first (then wait for its exit)."""
    try:
        if signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a pool's terminate() must wait
    except ValueError:
        pass  # not the main thread: the handler was never installed by this module
    with _exiting:
        _flush_everything()


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
    and never release it). A second caller waits here for the first one's exit.
    """
    try:
        _exiting.acquire()
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


def _watch(read_fd: int) -> None:
    """The watcher thread: flush and exit on SIGTERM's wake-up byte while our handler is set."""
    try:
        while data := os.read(read_fd, 64):
            if signal.SIGTERM in data and signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
                _flush_and_exit(signal.SIGTERM)
    except OSError:
        pass  # the pipe was closed


def _watch_sigterm() -> None:
    """Act on SIGTERM from a thread of ours as well as from the handler (call in the main thread).

    Python runs a signal handler only in the main thread, once it is back in the interpreter: a
    pool worker's main thread waiting in C for its next task may never be (the signal came as it
    went back to sleep, or went to another thread), and the pool then waits for it forever. The
    signal's C handler writes its number to the wake-up fd (``signal.set_wakeup_fd``), which our
    thread reads. A wake-up fd set by someone else (an event loop's) is left to them.
    """
    global _watch_fds
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    if previous != -1:
        signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)
        return
    _watch_fds = (read_fd, write_fd)
    threading.Thread(
        target=_watch, args=(read_fd,), name="kilostar-otel SIGTERM", daemon=True
    ).start()


def _before_fork() -> None:
    """Block SIGTERM in the forking thread while our handler is set: the child holds a SIGTERM
    sent to it until :func:`_after_fork_in_child`. Until then it would write to our wake-up fd
    (our watcher would end this process), and Python forgets a signal that comes in a child
    before its own at-fork reset (the child would never exit)."""
    if signal.getsignal(signal.SIGTERM) is _exit_on_sigterm and signal.SIGTERM not in (
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    ):
        _blocked_for_fork.add(threading.get_ident())


def _unblock_after_fork() -> None:
    if threading.get_ident() in _blocked_for_fork:
        _blocked_for_fork.discard(threading.get_ident())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _after_fork_in_child() -> None:
    """A forked child starts with no exit under way, and stops writing signals to its parent's
    watcher (it gets its own when it registers); then it takes the SIGTERM held for it."""
    global _watch_fds, _exiting
    _exiting = _thread.allocate_lock()
    try:
        if _watch_fds is not None:
            read_fd, write_fd = _watch_fds
            _watch_fds = None
            previous = signal.set_wakeup_fd(-1)
            if previous != write_fd:
                signal.set_wakeup_fd(previous)  # not ours any more
            os.close(read_fd)
            os.close(write_fd)
    except Exception:
        _log.exception("kilostar-otel could not reset the SIGTERM watcher in a forked child")
    finally:
        _unblock_after_fork()


def flush_at_process_exit() -> None:
    """Flush this process's spans when it ends, even through ``os._exit()`` (``multiprocessing``).

    Use it as the initializer of a pool, ``Pool(initializer=flush_at_process_exit)``, or call it
    at the start of a child process (or of your own initializer). When the child ends normally
    (the pool is closed and joined) or is terminated (``Pool.terminate()``, the end of a
    ``with Pool(...)`` block: SIGTERM, which flushes and then exits if SIGTERM had no handler
    yet), every ``configure()`` pipeline is flushed and shut down within its
    ``exit_timeout_millis``. SIGTERM ends the process by then (plus half a second) even when it
    finds the main thread blocked in C (a thread of ours acts on it, through
    ``signal.set_wakeup_fd`` unless a wake-up fd is set already) or queueing a span (that
    pipeline's queued spans are lost then). Idempotent per process; never raises.
    """
    global _registered_pid, _fork_hook_registered
    try:
        if _registered_pid == os.getpid():
            return
        util.Finalize(None, _flush_at_exit, exitpriority=_EXIT_PRIORITY)
        _registered_pid = os.getpid()
        if not _fork_hook_registered and hasattr(os, "register_at_fork"):
            os.register_at_fork(
                before=_before_fork,
                after_in_parent=_unblock_after_fork,
                after_in_child=_after_fork_in_child,
            )
            _fork_hook_registered = True
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _exit_on_sigterm)
            if signal.getsignal(signal.SIGTERM) is _exit_on_sigterm and _fork_hook_registered:
                _watch_sigterm()
    except Exception:
        _log.exception("kilostar-otel could not register the flush at process exit")
