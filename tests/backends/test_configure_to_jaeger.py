"""1. ``configure()`` straight into a real Jaeger v2, over OTLP/gRPC and OTLP/HTTP.

A request span with a workflow inside (one step); then Jaeger's query API must return the workflow
trace by its ``trace_id``, with a root that has no parent and references the request span, the
request trace referencing the workflow back, and both traces found by the tag
``kilostar.request_id``. OTel Links are Jaeger ``FOLLOWS_FROM`` references; events are span logs.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

import kilostar_otel
from kilostar_otel import request_id_scope, workflow

from .conftest import Jaeger, tags_of


def references(span: dict[str, Any], kind: str) -> set[tuple[str, str]]:
    return {(r["traceID"], r["spanID"]) for r in span.get("references", []) if r["refType"] == kind}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_request_and_its_workflow_in_jaeger(jaeger: Jaeger, protocol: str) -> None:
    short = protocol.split("/")[0]
    service = f"kilostar-direct-{short}"
    request_id = f"req-direct-{short}-{uuid.uuid4().hex[:12]}"
    endpoint = f"http://{jaeger.otlp_grpc if short == 'grpc' else jaeger.otlp_http}"
    telemetry = kilostar_otel.configure(
        service_name=service,
        endpoint=endpoint,
        protocol=protocol,
        set_global=False,  # type: ignore[arg-type]
    )
    tracer = telemetry.get_tracer("test-jaeger")
    try:
        with (
            request_id_scope(request_id),
            tracer.start_as_current_span("POST /plan", kind=SpanKind.SERVER) as request,
        ):
            with workflow("plan", tracer_provider=telemetry.tracer_provider) as wf:
                with tracer.start_as_current_span("step"):
                    pass
        assert telemetry.force_flush(10_000)
        assert telemetry.dropped_spans == 0
    finally:
        telemetry.shutdown()
    request_trace_id = format(request.get_span_context().trace_id, "032x")
    request_span_id = format(request.get_span_context().span_id, "016x")

    # The workflow trace, by its trace_id: the root has no parent, the step is its child.
    found = jaeger.wait_trace(wf.trace_id, spans=2)
    assert found.trace_id == wf.trace_id
    assert len(found.spans) == 2
    root, step = found.one("invoke_workflow plan"), found.one("step")
    assert found.roots() == [root]
    assert references(root, "CHILD_OF") == set()
    assert found.parent_id(step) == root["spanID"]
    # The root references the request span (the OTel link), and the request trace links back.
    assert references(root, "FOLLOWS_FROM") == {(request_trace_id, request_span_id)}
    request_trace = jaeger.wait_trace(request_trace_id, spans=1)
    request_span = request_trace.spans[request_span_id]
    assert references(request_span, "FOLLOWS_FROM") == {(wf.trace_id, root["spanID"])}
    # The event on the request span is a span log in Jaeger.
    (log,) = request_span["logs"]
    assert tags_of(log) == {"event": "kilostar.workflow.started", "kilostar.trace_id": wf.trace_id}

    # Attributes and resource as on the wire (tests/otlp/test_wire.py).
    for trace in (found, request_trace):
        for span in trace.spans.values():
            tags = tags_of(span)
            assert tags["kilostar.request_id"] == request_id
            assert trace.service(span) == service
            assert trace.process_tags(span)["telemetry.distro.name"] == "kilostar-otel"
    assert "kilostar.trace_id" not in tags_of(request_span)
    for span in (root, step):
        assert tags_of(span)["kilostar.trace_id"] == wf.trace_id
    assert tags_of(root)["kilostar.workflow.name"] == "plan"
    assert tags_of(root)["gen_ai.operation.name"] == "invoke_workflow"
    assert tags_of(request_span)["span.kind"] == "server"

    # A search by the request id finds both traces, and nothing else.
    by_tag = jaeger.wait_find(service, {"kilostar.request_id": request_id}, count=2)
    assert {t.trace_id for t in by_tag} == {request_trace_id, wf.trace_id}
    assert service in jaeger.services()

    # The v3 API (OTLP JSON) has the same trace.
    v3 = jaeger.client.get(f"/api/v3/traces/{wf.trace_id}")
    assert v3.status_code == 200
    resource_spans = v3.json()["result"]["resourceSpans"]
    names = {
        span["name"] for rs in resource_spans for ss in rs["scopeSpans"] for span in ss["spans"]
    }
    assert names == {"invoke_workflow plan", "step"}


def test_an_unknown_trace_id_is_not_found(jaeger: Jaeger) -> None:
    assert jaeger.trace(uuid.uuid4().hex) is None
