"""Memory: request after request of bind/unbind and workflow enter/exit leaves nothing behind.

Each workload runs twice after a warm-up (which fills every legitimate cache):

* under ``tracemalloc``: the snapshot diff of the traced run must stay under
  :data:`TRACED_BOUND_BYTES` bytes in all, whatever the number of requests;
* untraced, at full speed: the count of live allocator blocks (``sys.getallocatedblocks``) and of
  gc-tracked objects must not grow by more than :data:`BLOCKS_BOUND` / :data:`OBJECTS_BOUND`.

A leak of one small object per request is 56+ bytes and one block each, so it would exceed these
bounds many times over. ``tracemalloc`` makes a workflow ~6x slower, so CI runs the sizes in
:data:`CI_SIZES` (one million untraced binds); the full size, one million requests of every
workload under both measurements, is::

    KILOSTAR_MEMORY_REQUESTS=1000000 .venv/bin/pytest tests/hostile/test_memory.py -s

(about 10 minutes: the traced million workflows dominate).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from kilostar_otel import (
    KiloStarSpanProcessor,
    bind_request_id,
    get_request_id,
    get_trace_id,
    request_id_scope,
    reset_request_id,
    workflow,
)
from kilostar_otel.integrations.asgi import RequestIdMiddleware

TRACED_BOUND_BYTES = 16 * 1024
BLOCKS_BOUND = 2000
OBJECTS_BOUND = 200
WARMUP = 5000
#: (traced, untraced) requests per workload in CI.
CI_SIZES = {
    "bind-unbind": (100_000, 1_000_000),
    "workflow": (10_000, 50_000),
    "asgi-middleware": (10_000, 100_000),
}
FULL = int(os.environ.get("KILOSTAR_MEMORY_REQUESTS", "0"))


def _provider() -> TracerProvider:
    """A private provider (the KiloStar processor, no exporter): finished spans are let go."""
    provider = TracerProvider()
    provider.add_span_processor(KiloStarSpanProcessor())
    return provider


def bind_unbind() -> Callable[[int, int], None]:
    def run(start: int, count: int) -> None:
        for i in range(start, start + count):
            rid = f"req-{i}"
            with request_id_scope(rid):
                assert get_request_id() == rid
            token = bind_request_id(rid)
            reset_request_id(token)
        assert get_request_id() == ""

    return run


def workflow_requests() -> Callable[[int, int], None]:
    """One request span, the request id bound, a workflow (linked both ways) with one step."""
    provider = _provider()
    tracer = provider.get_tracer("memory")

    def run(start: int, count: int) -> None:
        for i in range(start, start + count):
            with tracer.start_as_current_span("request"), request_id_scope(f"req-{i}"):
                with workflow("memory", tracer_provider=provider) as wf:
                    with tracer.start_as_current_span("step"):
                        assert get_trace_id() == wf.trace_id
        assert get_request_id() == get_trace_id() == ""

    return run


def asgi_requests() -> Callable[[int, int], None]:
    """The ASGI middleware called the way a server calls it, with an incoming id and baggage."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(get_request_id())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = RequestIdMiddleware(app)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def requests(start: int, count: int) -> None:
        for i in range(start, start + count):
            rid = f"req-{i}".encode()
            headers = [(b"x-request-id", rid), (b"baggage", b"tenant=acme")]
            await middleware({"type": "http", "headers": headers}, receive, send)
            assert seen.pop() == rid.decode()

    def run(start: int, count: int) -> None:
        asyncio.run(requests(start, count))

    return run


WORKLOADS = {
    "bind-unbind": bind_unbind,
    "workflow": workflow_requests,
    "asgi-middleware": asgi_requests,
}


def _traced_growth(run: Callable[[int, int], None], start: int, count: int) -> int:
    """Bytes still allocated after ``run`` (tracemalloc snapshot diff), its own frames aside."""
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<unknown>"),
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(ignore)
        run(start, count)
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(ignore)
    finally:
        tracemalloc.stop()
    diff = after.compare_to(before, "lineno")
    for stat in diff[:3]:
        if stat.size_diff > 1024:
            print(f"  largest growth: {stat}")
    return sum(stat.size_diff for stat in diff)


def _live_growth(run: Callable[[int, int], None], start: int, count: int) -> tuple[int, int]:
    """Growth of live allocator blocks and of gc-tracked objects across ``run``."""
    gc.collect()
    blocks, objects = sys.getallocatedblocks(), len(gc.get_objects())
    run(start, count)
    gc.collect()
    return sys.getallocatedblocks() - blocks, len(gc.get_objects()) - objects


@pytest.mark.slow
@pytest.mark.timeout(3600 if FULL else 300)
@pytest.mark.parametrize("name", list(WORKLOADS))
def test_a_million_requests_leave_no_live_objects_behind(name: str) -> None:
    traced, untraced = (FULL, FULL) if FULL else CI_SIZES[name]
    run = WORKLOADS[name]()
    run(0, WARMUP)
    grown_bytes = _traced_growth(run, WARMUP, traced)
    grown_blocks, grown_objects = _live_growth(run, WARMUP + traced, untraced)
    print(
        f"\nmemory {name}: {traced:,} requests traced -> {grown_bytes:+,} bytes; "
        f"{untraced:,} untraced -> {grown_blocks:+,} blocks, {grown_objects:+,} objects"
    )
    assert grown_bytes < TRACED_BOUND_BYTES
    assert grown_blocks < BLOCKS_BOUND
    assert grown_objects < OBJECTS_BOUND
