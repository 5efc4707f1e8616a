"""A process that SIGTERM ends through flush_at_process_exit, run by test_processes.py.

``python sigterm_app.py ENDPOINT HELD``: configures the global pipeline (OTLP/HTTP to ENDPOINT,
exports only every 60 s, ``exit_timeout_millis=EXIT_TIMEOUT_MILLIS``), calls
``flush_at_process_exit()``, ends SPANS spans, prints ``ready`` and waits for SIGTERM in the main
thread while holding HELD: ``nothing``; ``queue``, the pipeline's queue lock (as ``on_end`` holds it
while it queues a span); ``send``, its export lock (as a flush on the main thread holds it);
``threads``, ``threading``'s lock on its table of threads (as ``Thread.start()`` holds it);
``spans``: the main thread keeps ending spans (the signal lands wherever it does); or ``wait``:
the main thread waits in C for a lock nobody releases, as a pool worker waits for its next task,
and blocks SIGTERM, so it never gets back to the interpreter to run a Python handler (a pool
worker's main thread once took SIGTERM without being woken from that wait: same outcome).

``python sigterm_app.py ENDPOINT forks``: forks FORKS children and terminates each at once, as a
pool's ``terminate()`` may a worker it just started; prints their exit codes (``None`` for one
still running after the exit timeout and 5 s: it stops there), and that this process outlived
them (a child's SIGTERM must not end its parent).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import trace

import kilostar_otel
from kilostar_otel.processes import flush_at_process_exit

SPANS = 20
EXIT_TIMEOUT_MILLIS = 1000
FORKS = 20


def main(endpoint: str, held: str) -> None:
    telemetry = kilostar_otel.configure(
        "sigterm-svc",
        endpoint=endpoint,
        protocol="http/protobuf",
        schedule_delay_millis=60_000,
        exit_timeout_millis=EXIT_TIMEOUT_MILLIS,
    )
    flush_at_process_exit()
    tracer = trace.get_tracer("sigterm")
    for n in range(SPANS):
        tracer.start_span(f"queued-{n}").end()
    pipeline: Any = telemetry._pipeline
    locks: dict[str, AbstractContextManager[Any]] = {
        "nothing": nullcontext(),
        "queue": pipeline._lock,
        "send": pipeline._send_lock,
        "threads": threading._active_limbo_lock,  # type: ignore[attr-defined]
    }
    if held == "forks":
        codes: list[int | None] = []
        for _ in range(FORKS):
            child = os.fork()
            if child == 0:
                time.sleep(60)
                os._exit(1)
            os.kill(child, signal.SIGTERM)
            deadline = time.monotonic() + EXIT_TIMEOUT_MILLIS / 1000 + 5
            while (ended := os.waitpid(child, os.WNOHANG))[0] == 0:
                if time.monotonic() > deadline:
                    os.kill(child, signal.SIGKILL)
                    os.waitpid(child, 0)
                    break
                time.sleep(0.01)
            codes.append(os.waitstatus_to_exitcode(ended[1]) if ended[0] else None)
            if ended[0] == 0:
                break
        time.sleep(0.5)  # time for this process's own SIGTERM watcher to act, if it did
        print(json.dumps({"children": codes, "parent": "alive"}), flush=True)
        return
    if held == "wait":
        task = multiprocessing.Lock()
        task.acquire()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # another thread takes it
        print("ready", flush=True)
        task.acquire()
    if held == "spans":
        print("ready", flush=True)
        while True:
            tracer.start_span("more").end()
    with locks[held]:
        print("ready", flush=True)
        time.sleep(60)  # SIGTERM arrives here, with the lock held
    print("SIGTERM did not end the process", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
