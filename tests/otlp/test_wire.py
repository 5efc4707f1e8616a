"""What arrives over the wire: configure() + a request + a workflow, checked at an OTLP receiver.

The traced program (``wire_app.py``) runs in a fresh interpreter because configure() owns the
global provider. The same assertions run for OTLP/gRPC, OTLP/HTTP (plain and gzip), and through
the rotel collector (gRPC in and out, HTTP in and gzip'd HTTP out).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kilostar_otel.viewer import OtlpReceiver, ReceivedSpan

from .conftest import Rotel, clean_env, run_script

SERVICE = "wire-test-svc"


def assert_on_the_wire(spans: list[ReceivedSpan], seen: dict[str, Any]) -> None:
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == ["GET /plan", "invoke_workflow plan", "step"], by_name
    request, root, step = by_name["GET /plan"], by_name["invoke_workflow plan"], by_name["step"]

    # Two traces: the request continues the caller's trace, the workflow has its own.
    assert request.trace_id == "0af7651916cd43dd8448eb211c80319c" == seen["request_trace_id"]
    assert request.parent_span_id == "b7ad6b7169203331"
    assert request.span_id == seen["request_span_id"]
    assert root.trace_id != request.trace_id
    # The workflow root starts its trace, and that trace id is the workflow trace_id.
    assert root.parent_span_id == ""
    assert root.trace_id == seen["workflow_trace_id"] == seen["trace_id"]
    assert step.trace_id == root.trace_id
    assert step.parent_span_id == root.span_id
    # Links both ways.
    assert (request.trace_id, request.span_id) in root.links
    assert (root.trace_id, root.span_id) in request.links
    assert ("kilostar.workflow.started", {"kilostar.trace_id": root.trace_id}) in request.events

    # The ids on every span, the workflow name on the root, the service on every resource.
    for span in spans:
        assert span.attributes["kilostar.request_id"] == "req-wire-0001" == seen["request_id"]
        assert span.resource["service.name"] == SERVICE
        assert span.resource["telemetry.distro.name"] == "kilostar-otel"
    assert "kilostar.trace_id" not in request.attributes
    assert root.attributes["kilostar.trace_id"] == root.trace_id
    assert step.attributes["kilostar.trace_id"] == root.trace_id
    assert root.attributes["kilostar.workflow.name"] == "plan"
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"

    # The caller's other baggage entry (tenant=acme-secret) is nowhere in the attributes.
    for span in spans:
        assert "tenant" not in span.attributes
        assert "acme-secret" not in {str(v) for v in span.attributes.values()}
        assert {k for k in span.attributes if k.startswith("kilostar.")} <= {
            "kilostar.request_id",
            "kilostar.trace_id",
            "kilostar.workflow.name",
        }
    assert seen["flushed"] is True
    assert seen["dropped"] == 0


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [("grpc", "none"), ("grpc", "gzip"), ("http/protobuf", "none"), ("http/protobuf", "gzip")],
)
def test_direct_to_the_receiver(receiver: OtlpReceiver, protocol: str, compression: str) -> None:
    endpoint = receiver.http_endpoint
    if protocol == "grpc":
        endpoint = "http://" + receiver.grpc_endpoint
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_COMPRESSION=compression,
    )
    seen = run_script("wire_app.py", SERVICE, env=env)
    assert seen["protocol"] == protocol
    assert seen["sampler"].startswith("LinkAware{ParentBased{")
    spans = receiver.wait_for_spans(3)
    assert {s.transport for s in spans} == {"grpc" if protocol == "grpc" else "http"}
    assert_on_the_wire(spans, seen)


@pytest.mark.parametrize(
    ("app_protocol", "rotel_protocol"),
    [("grpc", "grpc"), ("http/protobuf", "http")],
)
def test_through_rotel(
    receiver: OtlpReceiver,
    start_rotel: Callable[[str, str], Rotel],
    app_protocol: str,
    rotel_protocol: str,
) -> None:
    # rotel's HTTP exporter gzips by default: this also proves the receiver takes gzip bodies.
    target = receiver.http_endpoint if rotel_protocol == "http" else receiver.grpc_endpoint
    collector = start_rotel(
        target if target.startswith("http") else "http://" + target, rotel_protocol
    )
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=(
            collector.grpc_endpoint if app_protocol == "grpc" else collector.http_endpoint
        ),
        OTEL_EXPORTER_OTLP_PROTOCOL=app_protocol,
    )
    seen = run_script("wire_app.py", SERVICE, env=env)
    spans = receiver.wait_for_spans(3, timeout=20)
    assert {s.transport for s in spans} == {"grpc" if rotel_protocol == "grpc" else "http"}
    assert_on_the_wire(spans, seen)


def test_the_service_name_argument_beats_the_environment(receiver: OtlpReceiver) -> None:
    env = clean_env(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.http_endpoint + "/v1/traces",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="from-env",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=wire,service.name=from-attrs",
    )
    seen = run_script("wire_app.py", SERVICE, env=env)
    assert seen["endpoint"] == receiver.http_endpoint + "/v1/traces"
    spans = receiver.wait_for_spans(3)
    assert_on_the_wire(spans, seen)
    assert {s.resource["deployment.environment"] for s in spans} == {"wire"}


def test_environment_alone_sets_the_service(receiver: OtlpReceiver) -> None:
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://" + receiver.grpc_endpoint,
        OTEL_SERVICE_NAME="from-env",
    )
    run_script("wire_app.py", env=env)
    spans = receiver.wait_for_spans(3)
    assert {s.resource["service.name"] for s in spans} == {"from-env"}


def test_sdk_disabled_sends_nothing_but_ids_still_work(receiver: OtlpReceiver) -> None:
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://" + receiver.grpc_endpoint,
        OTEL_SDK_DISABLED="true",
    )
    seen = run_script("wire_app.py", SERVICE, env=env)
    assert seen["request_id"] == "req-wire-0001"
    assert len(seen["trace_id"]) == 32
    with pytest.raises(TimeoutError):
        receiver.wait_for_spans(1, timeout=1.0)
