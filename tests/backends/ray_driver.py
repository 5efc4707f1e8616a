"""A Ray driver for a fresh interpreter: a workflow over Ray tasks and an actor, into Jaeger.

``python -m tests.backends.ray_driver <otlp-grpc-endpoint> <temp-dir> <request-id>`` configures
the driver's tracing, starts a local cluster whose workers export with the worker setup hook
(``setup_worker``, run by the job's runtime_env) to the same endpoint, runs one workflow inside a
request, and prints one JSON line with the ids. The remote code is defined here, in ``__main__``,
so Ray ships it by value and the workers need nothing from the test tree.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

import kilostar_otel
from kilostar_otel import get_trace_id, request_id_scope, workflow
from kilostar_otel.integrations import ray as kray


def main(endpoint: str, temp_dir: str, request_id: str) -> dict[str, Any]:
    telemetry = kilostar_otel.configure(
        service_name="kilostar-jaeger-driver", endpoint=endpoint, protocol="grpc"
    )
    kray.start_local_cluster(
        temp_dir, endpoint=endpoint, protocol="grpc", service_name="kilostar-jaeger-worker"
    )
    import ray

    @kray.remote
    def double(x: int) -> dict[str, Any]:
        return {"pid": os.getpid(), "trace_id": get_trace_id(), "value": 2 * x}

    @kray.remote
    class Tally:
        def __init__(self) -> None:
            self.total = 0

        def add(self, x: int) -> dict[str, Any]:
            self.total += x
            return {"pid": os.getpid(), "trace_id": get_trace_id(), "value": self.total}

    tracer = trace.get_tracer("ray-driver")
    with (
        request_id_scope(request_id),
        tracer.start_as_current_span("POST /plan", kind=SpanKind.SERVER) as request,
        workflow("ray plan") as wf,
    ):
        root = format(wf.span.get_span_context().span_id, "016x")
        doubled = ray.get([double.remote(i) for i in range(3)])
        tally = Tally.remote()
        added = [ray.get(tally.add.remote(x["value"])) for x in doubled]
    ray.shutdown()
    assert telemetry.force_flush(10_000)
    telemetry.shutdown()
    return {
        "trace_id": wf.trace_id,
        "root": root,
        "request_trace_id": format(request.get_span_context().trace_id, "032x"),
        "calls": [*doubled, *added],
        "driver_pid": os.getpid(),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3])))
