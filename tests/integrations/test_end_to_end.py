"""Acceptance: two real services on uvicorn, a real client, instrumented httpx between them.

Service A (FastAPI, FastAPIInstrumentor, RequestIdMiddleware, loguru) calls service B (Starlette,
OpenTelemetry ASGI middleware, RequestIdMiddleware, stdlib logging) through instrumented httpx.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from loguru import logger
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kilostar_otel import get_request_id, workflow
from kilostar_otel.integrations.asgi import RequestIdMiddleware
from kilostar_otel.integrations.logging import LOGURU_FORMAT, install_loguru

from .conftest import AsgiServer, LogCapture, wait_until

GENERATED = re.compile(r"req-[0-9a-f]{32}")
log_b = logging.getLogger("service.b")


async def service_b(request: Request) -> JSONResponse:
    log_b.info("B handling")
    return JSONResponse(
        {
            "request_id": get_request_id(),
            "x-request-id": request.headers.getlist("x-request-id"),
            "baggage": request.headers.getlist("baggage"),
            "traceparent": request.headers.getlist("traceparent"),
        }
    )


def make_service_a(b_url: str) -> FastAPI:
    app = FastAPI()

    async def call_b() -> Any:
        async with httpx.AsyncClient() as client:
            HTTPXClientInstrumentor.instrument_client(client)
            return (await client.get(f"{b_url}/b")).json()

    @app.get("/a")
    async def handler() -> dict[str, Any]:
        logger.info("A handling")
        return {"request_id": get_request_id(), "b": await call_b()}

    @app.get("/plan")
    async def plan() -> dict[str, Any]:
        async with workflow("plan") as wf:
            logger.info("A planning")
            b = await call_b()
        return {"request_id": get_request_id(), "trace_id": wf.trace_id, "b": b}

    app.add_middleware(RequestIdMiddleware)
    return app


@pytest.fixture
def loguru_lines() -> Iterator[list[str]]:
    restore = install_loguru()
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), format=LOGURU_FORMAT)
    yield lines
    logger.remove(sink)
    restore()


@pytest.fixture
def services(
    serve_asgi: Callable[..., AsgiServer], global_propagator: None
) -> Iterator[tuple[AsgiServer, AsgiServer]]:
    b_app = OpenTelemetryMiddleware(
        Starlette(routes=[Route("/b", service_b)], middleware=[Middleware(RequestIdMiddleware)])
    )
    b = serve_asgi(b_app)
    a_app = make_service_a(b.url)
    FastAPIInstrumentor.instrument_app(a_app)
    a = serve_asgi(a_app)
    yield a, b
    FastAPIInstrumentor.uninstrument_app(a_app)


def _server_spans(spans: Any, count: int) -> list[Any]:
    def found() -> list[Any]:
        server = [s for s in spans.all() if s.kind == trace.SpanKind.SERVER]
        return server if len(server) >= count else []

    return wait_until(found)


@pytest.mark.parametrize("incoming", ["req-e2e-given", None])
def test_one_request_id_and_one_trace_across_two_services(
    incoming: str | None,
    services: tuple[AsgiServer, AsgiServer],
    spans: Any,
    stdlib_logs: LogCapture,
    loguru_lines: list[str],
) -> None:
    a, _ = services
    headers = {"X-Request-Id": incoming} if incoming else {}
    response = httpx.get(f"{a.url}/a", headers=headers, timeout=30)
    assert response.status_code == 200
    body = response.json()
    rid = response.headers["x-request-id"]
    assert rid == incoming if incoming else GENERATED.fullmatch(rid)
    assert body["request_id"] == rid

    # B saw the same request id in X-Request-Id and in baggage, and bound it.
    seen = body["b"]
    assert seen["x-request-id"] == [rid]
    assert f"kilostar.request_id={rid}" in seen["baggage"][0].split(",")
    assert seen["request_id"] == rid

    # The same OTel trace: B's traceparent names A's trace and A's httpx client span.
    server_a, server_b = sorted(_server_spans(spans, 2), key=lambda s: s.start_time)
    client = next(s for s in spans.all() if s.kind == trace.SpanKind.CLIENT)
    _, trace_hex, parent_hex, _ = seen["traceparent"][0].split("-")
    assert trace_hex == format(server_a.context.trace_id, "032x")
    assert parent_hex == format(client.context.span_id, "016x")
    assert server_b.context.trace_id == server_a.context.trace_id
    assert server_b.parent.span_id == client.context.span_id
    in_trace = [s for s in spans.all() if s.context.trace_id == server_a.context.trace_id]
    assert len(in_trace) >= 4
    assert {s.attributes.get("kilostar.request_id") for s in in_trace} == {rid}

    # Logs from both services carry the request id (A: loguru, B: stdlib logging).
    assert any("A handling" in line and f"request_id={rid} " in line for line in loguru_lines)
    assert any("B handling" in line and f"request_id={rid} " in line for line in stdlib_logs.lines)


def test_a_handler_that_starts_a_workflow_shows_the_linked_workflow_trace(
    services: tuple[AsgiServer, AsgiServer], spans: Any, loguru_lines: list[str]
) -> None:
    a, _ = services
    response = httpx.get(f"{a.url}/plan", headers={"X-Request-Id": "req-plan"}, timeout=30)
    body = response.json()
    trace_id = body["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert body["request_id"] == body["b"]["request_id"] == "req-plan"

    server_a, server_b = sorted(_server_spans(spans, 2), key=lambda s: s.start_time)
    root = next(s for s in spans.all() if s.name == "invoke_workflow plan")
    # The workflow is its own trace whose id is trace_id, linked both ways to the request span.
    assert (
        format(root.context.trace_id, "032x")
        == trace_id
        != format(server_a.context.trace_id, "032x")
    )
    assert root.parent is None
    assert [link.context.span_id for link in root.links] == [server_a.context.span_id]
    assert root.context.span_id in [link.context.span_id for link in server_a.links]
    started = [e for e in server_a.events if e.name == "kilostar.workflow.started"]
    assert [e.attributes["kilostar.trace_id"] for e in started] == [trace_id]
    # B was called from inside the workflow: its server span is in the workflow trace.
    assert format(server_b.context.trace_id, "032x") == trace_id
    assert body["b"]["traceparent"][0].split("-")[1] == trace_id
    for span in spans.all():
        assert span.attributes.get("kilostar.request_id") == "req-plan"
    assert any(
        "A planning" in line and "request_id=req-plan " in line and f"trace_id={trace_id} " in line
        for line in loguru_lines
    )


# -- 500 concurrent requests --------------------------------------------------------------------


async def concurrent_endpoint(request: Request) -> JSONResponse:
    tracer = trace.get_tracer("tests.concurrency")
    with tracer.start_as_current_span("work"):
        await asyncio.sleep(0.005)
        first = get_request_id()
        await asyncio.sleep(0.005)
        return JSONResponse({"request_id": first, "again": get_request_id()})


def test_500_concurrent_requests_each_keep_their_own_id(
    serve_asgi: Callable[..., AsgiServer], spans: Any
) -> None:
    app = OpenTelemetryMiddleware(
        Starlette(
            routes=[Route("/", concurrent_endpoint)],
            middleware=[Middleware(RequestIdMiddleware)],
        )
    )
    server = serve_asgi(app, backlog=1024)
    ids = [f"req-conc-{i:03d}" for i in range(500)]

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            return await asyncio.gather(
                *(client.get(server.url, headers={"X-Request-Id": rid}) for rid in ids)
            )

    responses = asyncio.run(run())
    for rid, response in zip(ids, responses, strict=True):
        assert response.status_code == 200
        assert response.headers.get_list("x-request-id") == [rid]
        assert response.json() == {"request_id": rid, "again": rid}

    server_spans = _server_spans(spans, 500)
    by_trace: dict[int, set[str]] = {}
    for span in spans.all():
        by_trace.setdefault(span.context.trace_id, set()).add(
            span.attributes.get("kilostar.request_id", "")
        )
    assert len(server_spans) == 500 == len(by_trace)
    # Every trace (one per request) has exactly one id on all its spans, and no id repeats.
    assert all(len(found) == 1 for found in by_trace.values())
    assert sorted(next(iter(found)) for found in by_trace.values()) == ids
    assert len(spans.all()) >= 500 * 4  # server, receive/send, work spans all checked
