"""Outgoing requests carry traceparent, baggage with kilostar.request_id and X-Request-Id.

A real uvicorn server on 127.0.0.1 records the headers it receives; real httpx and requests
clients call it, with OpenTelemetry's instrumentation and with our own hooks/adapter/session.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import kilostar_otel
from kilostar_otel import request_id_scope
from kilostar_otel.integrations import httpx as kilostar_httpx
from kilostar_otel.integrations.requests import KiloStarAdapter, Session

from .conftest import AsgiServer

HEADERS = ("traceparent", "baggage", "x-request-id")


async def record(request: Request) -> JSONResponse:
    return JSONResponse([[k.decode(), v.decode()] for k, v in request.scope["headers"]])


@pytest.fixture
def recorder(serve_asgi: Callable[..., AsgiServer]) -> AsgiServer:
    return serve_asgi(Starlette(routes=[Route("/", record)]))


def received(response: httpx.Response | requests.Response) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for key, value in response.json():
        seen.setdefault(key, []).append(value)
    return seen


def assert_propagated(seen: dict[str, list[str]], rid: str, span: trace.Span) -> None:
    """One of each header, all naming ``rid`` and the caller's trace."""
    assert {h: len(seen.get(h, [])) for h in HEADERS} == dict.fromkeys(HEADERS, 1)
    assert seen["x-request-id"] == [rid]
    assert f"kilostar.request_id={rid}" in seen["baggage"][0].split(",")
    assert "tenant=acme" in seen["baggage"][0].split(",")
    version, trace_hex, _parent, _flags = seen["traceparent"][0].split("-")
    assert version == "00"
    assert trace_hex == format(span.get_span_context().trace_id, "032x")


@pytest.fixture
def bound(tracer: trace.Tracer) -> Iterator[trace.Span]:
    """A request id, a baggage entry and a current span, as inside a request handler."""
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with request_id_scope("req-out"), tracer.start_as_current_span("handler") as span:
            yield span
    finally:
        context.detach(token)


# -- with OpenTelemetry's instrumentation and the global propagator ---------------------------


def test_instrumented_httpx_sync_and_async(
    recorder: AsgiServer, bound: trace.Span, global_propagator: None, spans: Any
) -> None:
    with httpx.Client() as client:
        HTTPXClientInstrumentor.instrument_client(client)
        seen = received(client.get(recorder.url))
    assert_propagated(seen, "req-out", bound)
    client_span = next(s for s in spans.all() if s.kind == trace.SpanKind.CLIENT)
    assert seen["traceparent"][0].split("-")[2] == format(client_span.context.span_id, "016x")
    assert client_span.attributes["kilostar.request_id"] == "req-out"

    async def call() -> dict[str, list[str]]:
        async with httpx.AsyncClient() as client:
            HTTPXClientInstrumentor.instrument_client(client)
            return received(await client.get(recorder.url))

    assert_propagated(asyncio.run(call()), "req-out", bound)


@pytest.fixture
def instrumented_requests() -> Iterator[None]:
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument()
    yield
    instrumentor.uninstrument()


def test_instrumented_requests(
    recorder: AsgiServer, bound: trace.Span, global_propagator: None, instrumented_requests: None
) -> None:
    assert_propagated(received(requests.get(recorder.url, timeout=10)), "req-out", bound)


def test_otel_propagators_env_var_with_instrumented_clients(recorder: AsgiServer) -> None:
    # A fresh interpreter configured only by environment: OTEL_PROPAGATORS names our entry point.
    code = textwrap.dedent(
        f"""
        import json, sys
        import httpx, requests
        from opentelemetry import baggage, context
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.requests import RequestsInstrumentor
        from kilostar_otel import request_id_scope
        tracer = TracerProvider().get_tracer("t")
        HTTPXClientInstrumentor().instrument()
        RequestsInstrumentor().instrument()
        context.attach(baggage.set_baggage("tenant", "acme"))
        with request_id_scope("req-env"), tracer.start_as_current_span("h") as span:
            out = {{
                "httpx": httpx.get("{recorder.url}").json(),
                "requests": requests.get("{recorder.url}", timeout=10).json(),
                "trace": format(span.get_span_context().trace_id, "032x"),
            }}
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "OTEL_PROPAGATORS": "tracecontext,baggage,kilostar"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for client in ("httpx", "requests"):
        seen: dict[str, list[str]] = {}
        for key, value in out[client]:
            seen.setdefault(key, []).append(value)
        assert seen["x-request-id"] == ["req-env"]
        assert set(seen["baggage"][0].split(",")) == {"tenant=acme", "kilostar.request_id=req-env"}
        assert seen["traceparent"][0].split("-")[1] == out["trace"]


# -- without instrumentation: our hooks, adapter and session ----------------------------------


def test_httpx_hook_sync(recorder: AsgiServer, bound: trace.Span) -> None:
    with kilostar_httpx.install(httpx.Client()) as client:
        seen = received(client.get(recorder.url, headers={"X-Request-Id": "stale"}))
    assert_propagated(seen, "req-out", bound)
    # No client span without instrumentation: the parent is the caller's current span.
    assert seen["traceparent"][0].split("-")[2] == format(bound.get_span_context().span_id, "016x")


def test_httpx_hook_async(recorder: AsgiServer, bound: trace.Span) -> None:
    async def call() -> dict[str, list[str]]:
        async with kilostar_httpx.install(httpx.AsyncClient()) as client:
            return received(await client.get(recorder.url))

    assert_propagated(asyncio.run(call()), "req-out", bound)


def test_httpx_event_hooks_by_hand_and_install_is_idempotent(
    recorder: AsgiServer, bound: trace.Span
) -> None:
    client = httpx.Client(event_hooks={"request": [kilostar_httpx.inject_hook]})
    with kilostar_httpx.install(kilostar_httpx.install(httpx.Client())) as twice, client:
        assert len(twice.event_hooks["request"]) == 1
        assert_propagated(received(client.get(recorder.url)), "req-out", bound)


def test_requests_session_and_adapter(recorder: AsgiServer, bound: trace.Span) -> None:
    with Session() as session:
        assert_propagated(received(session.get(recorder.url, timeout=10)), "req-out", bound)
    with requests.Session() as plain:
        plain.mount("http://", KiloStarAdapter(max_retries=1))
        assert_propagated(received(plain.get(recorder.url, timeout=10)), "req-out", bound)


def test_unbound_context_sends_no_ids(recorder: AsgiServer) -> None:
    with kilostar_httpx.install(httpx.Client()) as client:
        seen = received(client.get(recorder.url))
    with Session() as session:
        seen_requests = received(session.get(recorder.url, timeout=10))
    for headers in (seen, seen_requests):
        assert not set(headers) & set(HEADERS)


# -- inject()/extract() for anything else: a message queue -------------------------------------


def test_inject_extract_through_a_queue(tracer: trace.Tracer, global_propagator: None) -> None:
    jobs: queue.Queue[dict[str, Any]] = queue.Queue()
    results: list[tuple[str, int, int]] = []

    def consumer() -> None:
        message = jobs.get(timeout=10)
        ctx = kilostar_otel.extract(message["headers"])
        token = context.attach(ctx)
        try:
            with tracer.start_as_current_span("consume") as span:
                parent = span.parent
                assert parent is not None
                results.append((kilostar_otel.get_request_id(), parent.span_id, parent.trace_id))
        finally:
            context.detach(token)

    worker = threading.Thread(target=consumer)
    worker.start()
    with request_id_scope("req-queue"), tracer.start_as_current_span("produce") as producer:
        jobs.put({"body": "work", "headers": kilostar_otel.inject({})})
    worker.join(10)
    produced = producer.get_span_context()
    assert results == [("req-queue", produced.span_id, produced.trace_id)]
