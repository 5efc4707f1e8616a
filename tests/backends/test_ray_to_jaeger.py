"""6. A Ray workflow lands in Jaeger as one workflow trace, the worker spans children in it.

The driver (``ray_driver.py``, a fresh interpreter: configure() and ray.init own globals) runs a
workflow over three tasks and an actor on a local cluster whose workers export with the worker
setup hook straight to Jaeger over OTLP/gRPC.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from .conftest import ROOT, Jaeger, clean_env, tags_of

pytestmark = pytest.mark.ray


def test_the_workers_spans_are_children_in_the_workflow_trace(
    jaeger: Jaeger, tmp_path_factory: pytest.TempPathFactory
) -> None:
    temp_dir = tmp_path_factory.mktemp("rayj")  # short: Ray's socket paths must fit 107 bytes
    request_id = f"req-ray-{uuid.uuid4().hex[:12]}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.backends.ray_driver",
            f"http://{jaeger.otlp_grpc}",
            str(temp_dir),
            request_id,
        ],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    trace_id = out["trace_id"]
    worker_pids = {call["pid"] for call in out["calls"]}
    assert out["driver_pid"] not in worker_pids
    assert {call["trace_id"] for call in out["calls"]} == {trace_id}

    # The root, plus at least one span per remote call from the workers.
    found = jaeger.wait_trace(trace_id, spans=1 + len(out["calls"]), timeout=60)
    assert found.roots() == [found.spans[out["root"]]]
    assert found.spans[out["root"]]["operationName"] == "invoke_workflow ray plan"
    assert found.is_whole()
    workers = [s for s in found.spans.values() if found.service(s) == "kilostar-jaeger-worker"]
    assert len(workers) >= len(out["calls"])
    assert {found.process_tags(s).get("process.pid") for s in workers} <= worker_pids
    for span in workers:
        assert found.parent_id(span) in found.spans
        assert tags_of(span)["kilostar.trace_id"] == trace_id
        assert tags_of(span)["kilostar.request_id"] == request_id
    by_tag = jaeger.wait_find(
        "kilostar-jaeger-worker", {"kilostar.request_id": request_id}, count=1
    )
    assert [t.trace_id for t in by_tag] == [trace_id]
    assert jaeger.trace(out["request_trace_id"]) is not None
