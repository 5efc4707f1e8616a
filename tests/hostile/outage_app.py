"""A traced service for the outage test, run in a fresh interpreter (configure() owns the globals).

``python outage_app.py ENDPOINT PROTOCOL MAX_QUEUE`` configures tracing with the global
``configure()`` (OTLP to ENDPOINT), serves a Starlette app under uvicorn on a free 127.0.0.1 port
and prints ``{"port": N}``. ``GET /work`` answers with its request id after a workflow with two
steps (four spans a request); ``GET /stats`` reports the pipeline's counters and anything that
escaped; ``POST /shutdown?timeout_ms=N`` calls ``Telemetry.shutdown(N)`` and reports how long it
took. The test stops the process by pid.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import uvicorn
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import kilostar_otel
from kilostar_otel import get_request_id, workflow
from kilostar_otel.integrations.asgi import RequestIdMiddleware


class Escapes:
    """Exceptions that escaped: from any thread, the event loop, or the ASGI app."""

    def __init__(self) -> None:
        self.count = 0
        self.what: list[str] = []

    def add(self, what: str) -> None:
        self.count += 1
        self.what.append(what[:200])


escapes = Escapes()
threading.excepthook = lambda args: escapes.add(f"thread: {args.exc_type.__name__}")
sys.unraisablehook = lambda args: escapes.add(f"unraisable: {args.exc_type.__name__}")


class _AppErrors(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        escapes.add(f"{record.name}: {record.getMessage()}")


for _name in ("uvicorn.error", "asyncio"):  # ASGI app errors; "exception never retrieved"
    logging.getLogger(_name).addHandler(_AppErrors(level=logging.ERROR))


class Counter(SpanProcessor):
    """Counts ended spans and samples the export queue's length (the pipeline runs first)."""

    def __init__(self, queue: Any) -> None:
        self.ended = 0
        self.max_queued = 0
        self._queue = queue

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1
        if self._queue is not None:
            self.max_queued = max(self.max_queued, len(self._queue))


def main(endpoint: str, protocol: str, max_queue: int) -> None:
    telemetry = kilostar_otel.configure(
        "outage-test",
        endpoint=endpoint,
        protocol=protocol,  # type: ignore[arg-type]
        timeout=1.0,  # each export (retries included) gives up after a second
        max_queue_size=max_queue,
        max_export_batch_size=min(64, max_queue),
        schedule_delay_millis=100,
    )
    # Private, for this test only: the batch queue, to show it never outgrows max_queue_size.
    pipeline = telemetry._pipeline
    assert pipeline is not None
    counter = Counter(pipeline._queue)
    telemetry.tracer_provider.add_span_processor(counter)
    tracer = trace.get_tracer("outage")

    async def work(request: Request) -> JSONResponse:
        async with workflow("outage"):
            for step in ("plan", "act"):
                with tracer.start_as_current_span(step):
                    await asyncio.sleep(0)
        return JSONResponse({"request_id": get_request_id()})

    async def stats(request: Request) -> JSONResponse:
        worker = pipeline._worker
        return JSONResponse(
            {
                "dropped": telemetry.dropped_spans,
                "queued": len(pipeline._queue) if pipeline._queue is not None else -1,
                "max_queued": counter.max_queued,
                "ended": counter.ended,
                "worker_alive": worker is not None and worker.is_alive(),
                "escaped": escapes.count,
                "escapes": escapes.what,
            }
        )

    async def shutdown(request: Request) -> JSONResponse:
        timeout_ms = int(request.query_params["timeout_ms"])
        start = time.monotonic()
        await asyncio.to_thread(telemetry.shutdown, timeout_ms)
        return JSONResponse(
            {"elapsed": time.monotonic() - start, "dropped": telemetry.dropped_spans}
        )

    app = OpenTelemetryMiddleware(
        Starlette(
            routes=[
                Route("/work", work),
                Route("/stats", stats),
                Route("/shutdown", shutdown, methods=["POST"]),
            ],
            middleware=[Middleware(RequestIdMiddleware)],
        ),
        exclude_spans=["receive", "send"],
        excluded_urls="stats,shutdown",
    )
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", backlog=1024
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    thread.join()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
