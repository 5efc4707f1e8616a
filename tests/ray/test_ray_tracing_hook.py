"""With Ray's own tracing hook on: Ray's spans and ours nest in one workflow trace.

Ray's hook is cluster-wide and fixed when the cluster starts, so this runs its own driver and
cluster in a fresh interpreter (``hook_driver.py``); every span, the driver's included, arrives
at the session's receiver over OTLP/gRPC.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kilostar_otel.viewer import OtlpReceiver
from kilostar_otel.viewer.receiver import ReceivedSpan

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def hooked(ray_receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.ray.hook_driver",
            f"http://{ray_receiver.grpc_endpoint}",
            str(tmp_path_factory.mktemp("rayhook")),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    request = [s for s in ray_receiver.spans() if s.span_id == out["request_span"]]
    assert len(request) == 1
    out["request"] = request[0]
    spans = [s for s in ray_receiver.spans() if s.trace_id == out["trace_id"]]
    return out, {s.span_id: s for s in spans}


def _chain(spans: dict[str, ReceivedSpan], span_id: str) -> list[ReceivedSpan]:
    """The span and its ancestors, nearest first."""
    chain = []
    while span_id in spans:
        chain.append(spans[span_id])
        span_id = spans[span_id].parent_span_id
    return chain


def test_callee_spans_nest_under_rays_spans_in_the_workflow_trace(hooked: Any) -> None:
    out, spans = hooked
    seen = out["seen"]
    root = spans[out["root"]]
    assert root.name == "invoke_workflow hooked"
    assert root.is_root
    request = out["request"]
    assert request.name == "GET /hooked"
    assert request.trace_id != root.trace_id
    assert root.links == ((request.trace_id, request.span_id),)  # linked both ways
    assert (root.trace_id, root.span_id) in request.links

    # Plain calls: ours <- Ray's consumer (worker) <- Ray's producer (driver) <- workflow root.
    for key, ours, ray_name in (
        ("task", "ray.task step_a", "tests.ray.workloads.step_a"),
        ("method", "ray.actor Planner.look", "Planner.look"),
        ("async_method", "ray.actor Streamer.look", "Streamer.look"),
    ):
        chain = _chain(spans, seen[key]["span_id"])
        assert [(s.name, s.kind) for s in chain] == [
            (ours, "CONSUMER"),
            (f"{ray_name} ray.remote_worker", "CONSUMER"),
            (f"{ray_name} ray.remote", "PRODUCER"),
            ("invoke_workflow hooked", "INTERNAL"),
        ], key
        assert chain[1].resource["service.name"] == "kilostar-test-worker"
        assert chain[2].resource["service.name"] == "kilostar-test-driver"

    # Generator methods: Ray opens no span on the worker; ours hangs under Ray's producer span.
    for key, ours, ray_name in (
        ("generator", "ray.actor Planner.steps", "Planner.steps"),
        ("async_generator", "ray.actor Streamer.stream", "Streamer.stream"),
    ):
        assert len({item["span_id"] for item in seen[key]}) == 1
        chain = _chain(spans, seen[key][0]["span_id"])
        assert [s.name for s in chain] == [ours, f"{ray_name} ray.remote", root.name], key


def test_ids_reach_every_callee_and_our_spans(hooked: Any) -> None:
    out, spans = hooked
    seen = out["seen"]
    calls = [seen["task"], seen["method"], seen["async_method"]]
    calls += seen["generator"] + seen["async_generator"]
    for call in calls:
        assert call["request_id"] == "req-hooked"
        assert call["trace_id"] == out["trace_id"]
        assert call["tracing"] is True
    ours = [s for s in spans.values() if s.name.startswith(("ray.task ", "ray.actor "))]
    assert len(ours) == 5
    for span in ours:
        assert span.attributes["kilostar.request_id"] == "req-hooked"
        assert span.attributes["kilostar.trace_id"] == out["trace_id"]
        assert span.resource["service.name"] == "kilostar-test-worker"
    # Ray's worker spans see the request id through Ray's own carrier (baggage).
    for span in spans.values():
        if span.name.endswith("ray.remote_worker"):
            assert span.attributes["kilostar.request_id"] == "req-hooked"


def test_a_later_call_without_ids_sees_none(hooked: Any) -> None:
    out, _ = hooked
    after = out["after"]
    assert (after["request_id"], after["trace_id"], after["baggage"]) == ("", "", {})
    assert after["otel_trace_id"] != out["trace_id"]
