"""Acceptance: a request starts a workflow that runs on Ray tasks and an actor, in one trace.

The driver's spans come from the session's in-memory exporter; every span a Ray worker made
arrives over real OTLP/gRPC at the receiver, and is there as soon as ``ray.get`` returns (each
traced call flushes before it hands back its result).
"""

from __future__ import annotations

from typing import Any

import pytest
import ray
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from kilostar_otel import new_request_id, request_id_scope, workflow
from kilostar_otel.integrations import ray as kray
from kilostar_otel.viewer import OtlpReceiver
from kilostar_otel.viewer.receiver import ReceivedSpan

from .conftest import PLANNER_SERVICE, WORKER_SERVICE
from .workloads import Planner, step_a, step_b

pytestmark = pytest.mark.ray


def _in_trace(receiver: OtlpReceiver, trace_id: str) -> list[ReceivedSpan]:
    return [s for s in receiver.spans() if s.trace_id == trace_id]


def test_request_workflow_tasks_and_actor_form_one_trace(
    ray_cluster: Any, ray_receiver: OtlpReceiver, tracer: trace.Tracer, spans: Any
) -> None:
    planner = Planner.options(runtime_env=kray.role_runtime_env(PLANNER_SERVICE)).remote()
    request_id = new_request_id()
    try:
        with (
            tracer.start_as_current_span("GET /plan", kind=SpanKind.SERVER) as request_span,
            request_id_scope(request_id),
            workflow("plan") as wf,
        ):
            a = step_a.remote(21)
            b = step_b.remote(planner, 5)
            direct = planner.plan.remote(7)
            got_a, got_b, got_direct = ray.get([a, b, direct])
        worker_spans = _in_trace(ray_receiver, wf.trace_id)  # no waiting: already flushed
    finally:
        ray.kill(kray.unwrap(planner))

    root = spans.named("invoke_workflow plan")
    request = spans.named("GET /plan")
    request_ctx = request_span.get_span_context()
    root_id = format(root.context.span_id, "016x")
    assert format(root.context.trace_id, "032x") == wf.trace_id
    assert [link.context.span_id for link in root.links] == [request_ctx.span_id]
    assert [link.context.span_id for link in request.links] == [root.context.span_id]

    # What each callee saw while it ran: the caller's ids, in the workflow trace.
    for seen in (got_a, got_b, got_b["inner"], got_direct):
        assert seen["request_id"] == request_id
        assert seen["trace_id"] == wf.trace_id
        assert seen["otel_trace_id"] == wf.trace_id
        assert seen["baggage"] == {"kilostar.request_id": request_id}
        assert seen["tracing"] is True
    assert got_a["value"] == 42

    # What arrived over OTLP: four worker spans, one trace, the right parents.
    by_id = {s.span_id: s for s in worker_spans}
    assert sorted(s.name for s in worker_spans) == [
        "ray.actor Planner.plan",
        "ray.actor Planner.plan",
        "ray.task step_a",
        "ray.task step_b",
    ]
    span_a = by_id[got_a["span_id"]]
    span_b = by_id[got_b["span_id"]]
    span_inner = by_id[got_b["inner"]["span_id"]]
    span_direct = by_id[got_direct["span_id"]]
    assert span_a.parent_span_id == root_id
    assert span_b.parent_span_id == root_id
    assert span_direct.parent_span_id == root_id
    assert span_inner.parent_span_id == span_b.span_id  # task -> actor, across two workers
    for span in worker_spans:
        assert span.kind == "CONSUMER"
        assert span.status_code == "UNSET"
        assert span.attributes["kilostar.request_id"] == request_id
        assert span.attributes["kilostar.trace_id"] == wf.trace_id
        assert span.attributes["ray.job_id"]
    assert span_a.attributes["ray.remote"] == "function"
    assert span_direct.attributes["ray.actor_class"] == "Planner"
    assert span_direct.attributes["ray.actor_method"] == "plan"

    # Each worker role exports under its own service name.
    assert span_a.resource["service.name"] == WORKER_SERVICE
    assert span_b.resource["service.name"] == WORKER_SERVICE
    assert span_direct.resource["service.name"] == PLANNER_SERVICE
    assert span_inner.resource["service.name"] == PLANNER_SERVICE

    # loguru inside the actor: the patcher installed by setup_worker filled in the ids.
    for seen in (got_direct, got_b["inner"]):
        log = seen["log"]
        assert log["request_id"] == request_id
        assert log["trace_id"] == wf.trace_id
        assert log["otel_trace_id"] == wf.trace_id
        assert log["otel_span_id"] == seen["span_id"]
