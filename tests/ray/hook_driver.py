"""A driver for a fresh interpreter: a local cluster with Ray's own tracing hook turned on.

``python -m tests.ray.hook_driver <otlp-endpoint> <temp-dir>``: the driver configures its own
tracing, starts a cluster whose ``_tracing_startup_hook`` is ``setup_worker``, runs a request
and a workflow over a task, a sync and an async actor (plain and generator methods), and prints
one JSON line with what the callees saw. Every span goes to the endpoint over OTLP/gRPC.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

import kilostar_otel
from kilostar_otel import request_id_scope, workflow
from kilostar_otel.integrations import ray as kray


def main(endpoint: str, temp_dir: str) -> dict[str, Any]:
    telemetry = kilostar_otel.configure(
        service_name="kilostar-test-driver", endpoint=endpoint, protocol="grpc"
    )
    kray.start_local_cluster(
        temp_dir,
        endpoint=endpoint,
        protocol="grpc",
        service_name="kilostar-test-worker",
        ray_tracing_hook=True,
    )
    import ray

    from tests.ray.workloads import Planner, Streamer, step_a

    planner = Planner.remote()
    streamer = Streamer.remote()
    tracer = trace.get_tracer("hook-driver")
    with (
        tracer.start_as_current_span("GET /hooked", kind=SpanKind.SERVER) as request_span,
        request_id_scope("req-hooked"),
        workflow("hooked") as wf,
    ):
        root = format(wf.span.get_span_context().span_id, "016x")
        seen = {
            "task": ray.get(step_a.remote(1)),
            "method": ray.get(planner.look.remote()),
            "generator": [ray.get(ref) for ref in planner.steps.remote(2)],
            "async_method": ray.get(streamer.look.remote()),
            "async_generator": [ray.get(ref) for ref in streamer.stream.remote(2)],
        }
    after = ray.get(kray.unwrap(planner).look.remote())
    ray.shutdown()
    telemetry.force_flush()
    telemetry.shutdown()
    return {
        "trace_id": wf.trace_id,
        "root": root,
        "request_span": format(request_span.get_span_context().span_id, "016x"),
        "seen": seen,
        "after": after,
        "ray_tracing": True,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
