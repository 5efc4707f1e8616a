"""1,000 concurrent asyncio tasks, each with its own request and workflow: zero cross-talk."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from opentelemetry import baggage, trace

from kilostar_otel import get_request_id, get_trace_id, request_id_scope, snapshot, workflow
from tests.conftest import Spans

TASKS = 1000


async def test_concurrent_requests_and_workflows_never_cross_talk(
    tracer: trace.Tracer, spans: Spans
) -> None:
    mismatches: list[str] = []

    async def request(n: int) -> tuple[str, str]:
        rid = f"req-{n:04d}"
        with request_id_scope(rid), tracer.start_as_current_span(f"request {n}"):
            await asyncio.sleep(random.random() / 1000)
            async with workflow(f"wf {n}") as wf:
                for step in range(3):
                    with tracer.start_as_current_span(f"step {n}.{step}"):
                        await asyncio.sleep(random.random() / 1000)
                        if get_request_id() != rid or get_trace_id() != wf.trace_id:
                            mismatches.append(f"task {n} step {step}")
                        if baggage.get_baggage("kilostar.request_id") != rid:
                            mismatches.append(f"task {n} baggage")
                        if snapshot()["trace_id"] != wf.trace_id:
                            mismatches.append(f"task {n} snapshot")
            if get_trace_id() != "":
                mismatches.append(f"task {n} trace id leaked")
            return rid, wf.trace_id

    results = await asyncio.gather(*(request(n) for n in range(TASKS)))
    assert mismatches == []
    assert get_request_id() == ""
    assert get_trace_id() == ""

    workflow_of_request = dict(results)
    assert len(set(workflow_of_request.values())) == TASKS
    by_trace: dict[str, list[str]] = defaultdict(list)
    for span in spans.all():
        rid = span.attributes["kilostar.request_id"]
        n = int(str(rid)[4:])
        assert span.name.split()[-1].split(".")[0] == str(n), (span.name, rid)
        if span.name.startswith(("step", "invoke_workflow")):
            assert span.attributes["kilostar.trace_id"] == workflow_of_request[str(rid)]
            assert f"{span.context.trace_id:032x}" == workflow_of_request[str(rid)]
        by_trace[f"{span.context.trace_id:032x}"].append(span.name)
    assert len(spans.all()) == TASKS * 5
    assert len(by_trace) == TASKS * 2  # one request trace and one workflow trace per task
