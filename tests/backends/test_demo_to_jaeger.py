"""5. ``kilostar-otel demo --otlp-endpoint`` into the collector -> Jaeger, as docs/jaeger.md tells.

The demo's printed workflow ``trace_id`` opens the workflow in Jaeger's API, and the tag search
``kilostar.request_id=demo-plan-1`` finds the request and its workflow; the failing request is
kept by the error policy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from .conftest import ROOT, SINGLE, Jaeger, StartCollector, tags_of

PLAN = re.compile(r"^  POST /plan +200  request_id=demo-plan-1  workflow trace_id=([0-9a-f]{32})$")
FAIL = re.compile(r"^  GET  /fail +500  request_id=demo-fail-1$")


def test_the_demos_trace_id_opens_the_workflow_in_jaeger(
    jaeger: Jaeger, start_collector: StartCollector
) -> None:
    collector = start_collector(
        SINGLE,
        JAEGER_OTLP_GRPC_ENDPOINT=jaeger.otlp_grpc,
        TAIL_SAMPLING_DECISION_WAIT="1s",
        BATCH_TIMEOUT="100ms",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(GRPC_ENABLE_FORK_SUPPORT="false", NO_COLOR="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kilostar_otel.cli",
            "demo",
            "--otlp-endpoint",
            collector.grpc_endpoint,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    (trace_id,) = [m.group(1) for line in lines if (m := PLAN.match(line))]
    assert any(FAIL.match(line) for line in lines), done.stdout
    assert f"paste the workflow trace_id {trace_id}" in done.stdout

    workflow = jaeger.wait_trace(trace_id, spans=2)
    (root,) = workflow.roots()
    assert root["operationName"] == "invoke_workflow plan"
    assert len(workflow.spans) >= 3, "the workflow's steps are in the trace"
    assert workflow.is_whole()
    for span in workflow.spans.values():
        assert workflow.service(span) == "kilostar-demo"
        assert tags_of(span)["kilostar.trace_id"] == trace_id
        assert tags_of(span)["kilostar.request_id"] == "demo-plan-1"

    (link,) = [r for r in root["references"] if r["refType"] == "FOLLOWS_FROM"]
    request = jaeger.wait_trace(link["traceID"])
    assert link["spanID"] in request.spans

    found = jaeger.wait_find("kilostar-demo", {"kilostar.request_id": "demo-plan-1"}, count=2)
    assert {t.trace_id for t in found} == {trace_id, link["traceID"]}
    failed = jaeger.wait_find("kilostar-demo", {"kilostar.request_id": "demo-fail-1"}, count=1)
    assert any(tags_of(s).get("error") is True for t in failed for s in t.spans.values())
