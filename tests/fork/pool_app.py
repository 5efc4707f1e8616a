"""multiprocessing children and their spans, run in a fresh interpreter by test_processes.py.

``python pool_app.py ENDPOINT MODE``: configures the global pipeline (OTLP/HTTP to ENDPOINT,
exports only every 60 s, so a child's spans leave only when it is flushed), then runs 12 tasks,
each ending one span, in 3 forked pool workers. MODE is ``with`` (a ``with Pool(...)`` block,
which terminates the workers), ``join`` (close and join) or ``none`` (no initializer: a control
that shows the spans are lost). Prints one JSON line.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time

from opentelemetry import trace

import kilostar_otel
from kilostar_otel.processes import flush_at_process_exit

TASKS = 12


def task(n: int) -> int:
    time.sleep(0.05)  # the tasks spread over the workers
    with trace.get_tracer("pool").start_as_current_span("task") as span:
        span.set_attribute("task.n", n)
        span.set_attribute("task.pid", os.getpid())
    return os.getpid()


def main(endpoint: str, mode: str) -> None:
    telemetry = kilostar_otel.configure(
        "pool-svc", endpoint=endpoint, protocol="http/protobuf", schedule_delay_millis=60_000
    )
    context = multiprocessing.get_context("fork")
    initializer = None if mode == "none" else flush_at_process_exit
    start = time.monotonic()
    if mode == "join":
        pool = context.Pool(3, initializer=initializer)
        pids = pool.map(task, range(TASKS), chunksize=1)
        pool.close()
        pool.join()
    else:
        with context.Pool(3, initializer=initializer) as pool:
            pids = pool.map(task, range(TASKS), chunksize=1)
    elapsed = time.monotonic() - start
    telemetry.shutdown(10_000)
    print(json.dumps({"workers": len(set(pids)), "elapsed": elapsed}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
