"""A process that SIGTERM ends through flush_at_process_exit, run by test_processes.py.

``python sigterm_app.py ENDPOINT HELD``: configures the global pipeline (OTLP/HTTP to ENDPOINT,
exports only every 60 s, ``exit_timeout_millis=EXIT_TIMEOUT_MILLIS``), calls
``flush_at_process_exit()``, ends SPANS spans, prints ``ready`` and waits for SIGTERM in the main
thread while holding HELD: ``nothing``; ``queue``, the pipeline's queue lock (as ``on_end`` holds it
while it queues a span); ``send``, its export lock (as a flush on the main thread holds it);
``threads``, ``threading``'s lock on its table of threads (as ``Thread.start()`` holds it); or
``spans``: the main thread keeps ending spans (the signal lands wherever it does).
"""

from __future__ import annotations

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
