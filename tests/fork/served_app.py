"""The app the gunicorn tests serve: configure() at import (the master, with --preload).

Reads ``APP_SERVICE`` (service name) and the OTLP variables the test sets. With
``EXPORT_BEFORE_FORK=1`` the master exports one span before forking, so it holds a keep-alive
connection (HTTP) or a live channel (gRPC) that the workers must not share. Every request ends a
``request`` span carrying ``worker.pid`` (with 20 ``step`` spans of 4 KiB) and answers with the
worker's pid, instance id, failed exports and whether it exports through an exporter of its own.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import trace

import kilostar_otel

TELEMETRY = kilostar_otel.configure(os.environ["APP_SERVICE"], schedule_delay_millis=100)
MASTER_EXPORTER = TELEMETRY.exporter  # what a worker must not use (its connections)
tracer = trace.get_tracer("served_app")
STEPS = 20
PAYLOAD = "p" * 4096
if os.environ.get("EXPORT_BEFORE_FORK") == "1":
    tracer.start_span("before-fork").end()
    if not TELEMETRY.force_flush(10_000):
        raise SystemExit("the master could not export before forking")


def _answer() -> bytes:
    with tracer.start_as_current_span("request") as span:
        span.set_attribute("worker.pid", os.getpid())
        for n in range(STEPS):  # large export bodies: two processes on one socket interleave
            with tracer.start_as_current_span("step") as step:
                step.set_attribute("payload", PAYLOAD)
                step.set_attribute("n", n)
        time.sleep(0.05)  # concurrent requests then spread over the workers
    resource = TELEMETRY.tracer_provider.resource.attributes
    return json.dumps(
        {
            "pid": os.getpid(),
            "instance": resource.get("service.instance.id"),
            "own_exporter": TELEMETRY.exporter is not MASTER_EXPORTER,
            "failed": TELEMETRY.failed_spans,
        }
    ).encode()


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = _answer()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = _answer()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"json")]}
    )
    await send({"type": "http.response.body", "body": body})
