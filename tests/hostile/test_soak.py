"""Isolation soak: 2,000 concurrent requests on one uvicorn server, each running a workflow.

Every request starts a workflow whose steps run as a coroutine, through ``asyncio.to_thread``
and through our context-carrying executor, all at once and with random pauses so that thousands of
contexts interleave on one event loop and a few worker threads. Afterwards every response, span
and log line is checked against the request it belongs to: the count of mismatches must be zero.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kilostar_otel import get_request_id, get_trace_id, workflow
from kilostar_otel.integrations.asgi import RequestIdMiddleware
from kilostar_otel.integrations.threads import ThreadPoolExecutor
from tests.integrations.conftest import AsgiServer, LogCapture, wait_until

REQUESTS = 2000
GENERATED = re.compile(r"req-[0-9a-f]{32}")
LOG_LINE = re.compile(r".*\[request_id=(\S*) trace_id=(\S*) .*\] soak (\d+) (\w+)$")
log = logging.getLogger("tests.soak")
tracer = trace.get_tracer("tests.soak")


class InFlight:
    """How many requests the app is handling at once (and the most it ever was)."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="soak") as executor:
        yield executor


def soak_app(pool: ThreadPoolExecutor, in_flight: InFlight) -> Any:
    def thread_step(i: int, kind: str) -> list[str]:
        with tracer.start_as_current_span(f"{kind}-step", attributes={"soak.index": i}):
            time.sleep(random.random() / 1000)
            log.info("soak %d %s", i, kind)
            return [get_request_id(), get_trace_id()]

    async def async_step(i: int) -> list[str]:
        with tracer.start_as_current_span("async-step", attributes={"soak.index": i}):
            await asyncio.sleep(random.random() / 100)
            log.info("soak %d async", i)
            await asyncio.sleep(0)
            return [get_request_id(), get_trace_id()]

    async def handler(request: Request) -> JSONResponse:
        i = int(request.path_params["i"])
        in_flight.now += 1
        in_flight.peak = max(in_flight.peak, in_flight.now)
        try:
            await asyncio.sleep(random.random() / 100)
            async with workflow("soak", attributes={"soak.index": i}) as wf:
                log.info("soak %d workflow", i)
                loop = asyncio.get_running_loop()
                steps = await asyncio.gather(
                    async_step(i),
                    asyncio.to_thread(thread_step, i, "to_thread"),
                    loop.run_in_executor(pool, thread_step, i, "executor"),
                )
            return JSONResponse(
                {"request_id": get_request_id(), "trace_id": wf.trace_id, "steps": steps}
            )
        finally:
            in_flight.now -= 1

    return OpenTelemetryMiddleware(
        Starlette(
            routes=[Route("/soak/{i:int}", handler)], middleware=[Middleware(RequestIdMiddleware)]
        ),
        exclude_spans=["receive", "send"],
    )


async def _send_all(url: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def one(i: int) -> httpx.Response:
            headers = {"X-Request-Id": f"req-soak-{i}"} if i % 2 == 0 else {}
            return await client.get(f"{url}/soak/{i}", headers=headers)

        return await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(REQUESTS))), timeout=240
        )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_2000_concurrent_requests_with_workflows_never_mix_their_ids(
    serve_asgi: Callable[..., AsgiServer],
    pool: ThreadPoolExecutor,
    spans: Any,
    stdlib_logs: LogCapture,
) -> None:
    in_flight = InFlight()
    server = serve_asgi(soak_app(pool, in_flight), backlog=4096)
    responses = asyncio.run(_send_all(server.url))

    mismatches: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            mismatches.append(what)

    # Responses: the id each request got, and the workflow trace id its handler saw.
    request_id: dict[int, str] = {}
    trace_id: dict[int, str] = {}
    for i, response in enumerate(responses):
        assert response.status_code == 200, (i, response.status_code)
        rid = response.headers["x-request-id"]
        body = response.json()
        request_id[i], trace_id[i] = rid, body["trace_id"]
        check(rid == f"req-soak-{i}" if i % 2 == 0 else bool(GENERATED.fullmatch(rid)), f"id {i}")
        check(body["request_id"] == rid, f"response {i}")
        for step in body["steps"]:
            check(step == [rid, body["trace_id"]], f"step seen by request {i}")
    assert len(set(request_id.values())) == len(set(trace_id.values())) == REQUESTS
    index_of_trace = {tid: i for i, tid in trace_id.items()}

    # Spans: the workflow root and its three steps carry the request's ids and are in the
    # workflow's trace; the server span carries the request id and links to that workflow.
    expected_names = {"invoke_workflow soak", "async-step", "to_thread-step", "executor-step"}
    server_spans = wait_until(
        lambda: (
            (found := [s for s in spans.all() if s.kind == trace.SpanKind.SERVER])
            and len(found) >= REQUESTS
            and found
        ),
        timeout=60,
    )
    indexed = [s for s in spans.all() if "soak.index" in s.attributes]
    assert len(server_spans) == REQUESTS
    assert len(indexed) == REQUESTS * len(expected_names)
    per_request: dict[int, set[str]] = {}
    for span in indexed:
        i = int(span.attributes["soak.index"])
        per_request.setdefault(i, set()).add(span.name)
        check(span.attributes.get("kilostar.request_id") == request_id[i], f"span {span.name} {i}")
        check(span.attributes.get("kilostar.trace_id") == trace_id[i], f"span {span.name} {i}")
        check(format(span.context.trace_id, "032x") == trace_id[i], f"trace of {span.name} {i}")
    check(all(names == expected_names for names in per_request.values()), "span names")
    for span in server_spans:
        linked = [format(link.context.trace_id, "032x") for link in span.links]
        check(len(linked) == 1 and linked[0] in index_of_trace, "server span link")
        i = index_of_trace.get(linked[0], -1) if linked else -1
        check(span.attributes.get("kilostar.request_id") == request_id.get(i), f"server {i}")

    # Log lines: four per request, each with its own request's ids.
    lines = [m for m in map(LOG_LINE.fullmatch, stdlib_logs.lines) if m]
    assert len(lines) == REQUESTS * 4
    for match in lines:
        rid, tid, i = match.group(1), match.group(2), int(match.group(3))
        check(rid == request_id[i] and tid == trace_id[i], f"log line {match.group(4)} {i}")

    print(
        f"\nsoak: {REQUESTS} requests, peak in flight {in_flight.peak}, "
        f"{len(indexed) + len(server_spans)} spans and {len(lines)} log lines checked, "
        f"{len(mismatches)} mismatches"
    )
    assert mismatches == []
    # The requests really overlapped (otherwise this would test nothing about isolation).
    assert in_flight.peak >= 100
