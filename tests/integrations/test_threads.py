"""Threads and executors: the ids and the OTel context reach worker threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from opentelemetry import baggage, trace

from kilostar_otel import bind_request_id, get_request_id, get_trace_id, request_id_scope, wrap
from kilostar_otel.integrations.threads import ThreadPoolExecutor
from kilostar_otel.workflow import workflow


def _ids() -> tuple[str, str, int]:
    span_id = trace.get_current_span().get_span_context().span_id
    return get_request_id(), get_trace_id(), span_id


def test_the_stdlib_executor_loses_the_ids_ours_keeps_them(tracer: trace.Tracer) -> None:
    with request_id_scope("req-t"), workflow("w") as wf:
        expected = ("req-t", wf.trace_id, wf.span.get_span_context().span_id)
        with concurrent.futures.ThreadPoolExecutor(1) as plain:
            lost = plain.submit(_ids).result()
        with ThreadPoolExecutor(2) as pool:
            kept = pool.submit(_ids).result()
            mapped = list(pool.map(lambda _: _ids(), range(4)))
    assert lost == ("", "", 0)
    assert kept == expected
    assert mapped == [expected] * 4


def test_spans_in_workers_are_children_with_the_request_id(
    tracer: trace.Tracer, spans: Any
) -> None:
    def work(n: int) -> None:
        with tracer.start_as_current_span(f"work-{n}"):
            pass

    with request_id_scope("req-span"), tracer.start_as_current_span("parent") as parent:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(work, range(8)))
    children = [s for s in spans.all() if s.name.startswith("work-")]
    assert len(children) == 8
    for child in children:
        assert child.parent is not None
        assert child.parent.span_id == parent.get_span_context().span_id
        assert child.attributes["kilostar.request_id"] == "req-span"


def test_changes_inside_a_worker_do_not_leak() -> None:
    def rebind() -> str:
        bind_request_id("req-inner")
        return get_request_id()

    with request_id_scope("req-outer"), ThreadPoolExecutor(1) as pool:
        assert pool.submit(rebind).result() == "req-inner"
        assert pool.submit(get_request_id).result() == "req-outer"
        assert get_request_id() == "req-outer"


async def test_to_thread_copies_run_in_executor_does_not_unless_ours() -> None:
    loop = asyncio.get_running_loop()
    with request_id_scope("req-async"):
        to_thread = await asyncio.to_thread(get_request_id)
        with concurrent.futures.ThreadPoolExecutor(1) as plain:
            stdlib = await loop.run_in_executor(plain, get_request_id)
        wrapped = await loop.run_in_executor(None, wrap(get_request_id))
        with ThreadPoolExecutor(1) as ours:
            executor = await loop.run_in_executor(ours, get_request_id)
            loop.set_default_executor(ours)
            default = await loop.run_in_executor(None, get_request_id)
    assert (to_thread, stdlib, wrapped, executor, default) == (
        "req-async",
        "",
        "req-async",
        "req-async",
        "req-async",
    )


def test_baggage_reaches_the_worker() -> None:
    from opentelemetry import context

    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(baggage.get_baggage, "tenant").result() == "acme"
    finally:
        context.detach(token)
