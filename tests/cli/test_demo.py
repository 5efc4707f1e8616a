"""``kilostar-otel demo`` end to end, in a fresh interpreter (it owns the global provider).

What it prints is checked against what went over the wire: the OTLP/JSON lines it wrote, or the
spans a receiver (ours, or the rotel collector in between) got with ``--otlp-endpoint``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kilostar_otel.viewer import OtlpReceiver

CALL = re.compile(r"^  (GET|POST) +(/\w+) +(\d{3})  request_id=(\S+)(?:  workflow trace_id=(\w+))?")
HEADER = re.compile(r"^request (\S+)  ")
APP = re.compile(r"app on http://127\.0\.0\.1:(\d+), spans to (.*)$", re.MULTILINE)


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false", **(env or {})}
    environment.pop("NO_COLOR", None)
    environment.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return subprocess.run(
        [sys.executable, "-m", "kilostar_otel.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )


def calls_of(stdout: str) -> list[tuple[str, ...]]:
    return [m.groups() for line in stdout.splitlines() if (m := CALL.match(line))]


def wire_spans(path: Path) -> list[dict[str, Any]]:
    spans = []
    for line in path.read_text(encoding="utf-8").splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                spans.extend(scope_spans["spans"])
    return spans


def attribute(span: dict[str, Any], key: str) -> Any:
    for kv in span.get("attributes", []):
        if kv["key"] == key:
            return next(iter(kv["value"].values()))
    return None


def assert_port_closed(port: int) -> None:
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the demo left its server running"


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One run of the default demo (embedded receiver), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("demo") / "spans.jsonl"
    return run_demo("--out", str(out)), out


def normalised(text: str) -> list[str]:
    """Demo output with what changes from run to run (ids, ports, durations, paths) masked."""
    text = re.sub(r"[0-9a-f]{32}", "<id>", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", text)
    text = re.sub(r"\d+(?:\.\d+)? (?:ms|us|s)\b", "<duration>", text)
    text = re.sub(r"OTLP/JSON lines to \S+\.jsonl", "OTLP/JSON lines to <file>", text)
    return text.splitlines()


def test_the_readme_shows_what_the_demo_prints(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- demo-output -->", 1)[1].split("<!-- /demo-output -->", 1)[0]
    shown = section.split("```text\n", 1)[1].split("```", 1)[0]
    assert normalised(shown) == normalised(demo_run[0].stdout)
    assert readme.startswith("# kilostar-otel\n\n```bash\nmake demo ")


def test_the_demo_prints_each_request_with_its_workflow_and_writes_otlp_json(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = demo_run
    assert done.returncode == 0, done.stderr
    stdout = done.stdout
    assert "\x1b" not in stdout  # not a terminal: plain text
    app = APP.search(stdout)
    assert app and app.group(2).startswith("the embedded OTLP receiver (127.0.0.1:")
    assert_port_closed(int(app.group(1)))

    calls = calls_of(stdout)
    assert [(m, p, s) for m, p, s, _, _ in calls] == [
        ("GET", "/hello", "200"),
        ("GET", "/hello", "200"),
        ("POST", "/plan", "200"),
        ("GET", "/fail", "500"),
    ]
    ids = [c[3] for c in calls]
    assert ids[0] == "demo-hello-1" and ids[2] == "demo-plan-1" and ids[3] == "demo-fail-1"
    assert re.fullmatch(r"req-[0-9a-f]{32}", ids[1])  # sent without X-Request-Id
    workflow_id = calls[2][4]
    assert workflow_id and re.fullmatch(r"[0-9a-f]{32}", workflow_id)

    # One tree per request, in order, with the workflow nested in the /plan request's tree.
    lines = stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if HEADER.match(line)]
    assert [HEADER.match(lines[i]).group(1) for i in headers] == ids  # type: ignore[union-attr]
    plan = lines[headers[2] : headers[3]]
    wf_line = next(line for line in plan if "invoke_workflow plan" in line)
    assert f"trace_id={workflow_id}" in wf_line
    server_line = next(line for line in plan if "POST /plan  server" in line)
    assert wf_line.index("invoke_workflow") > server_line.index("POST")
    steps = [line for line in plan if "step " in line]
    assert len(steps) == 4
    assert all(line.index("step") > wf_line.index("invoke_workflow") for line in steps)
    assert "500 ERROR" in lines[headers[3]]

    # The file holds exactly what was drawn, with the link the tree was built from.
    spans = wire_spans(out)
    assert f"{len(spans)} spans in 5 traces" in stdout
    (root,) = [s for s in spans if s["name"] == "invoke_workflow plan"]
    assert root["traceId"] == workflow_id and "parentSpanId" not in root
    (server,) = [s for s in spans if s["name"] == "POST /plan" and s["kind"] == 2]
    assert [(ln["traceId"], ln["spanId"]) for ln in root["links"]] == [
        (server["traceId"], server["spanId"])
    ]
    assert {attribute(s, "kilostar.request_id") for s in spans if s["kind"] != 3} == set(ids)
    in_workflow = [s for s in spans if s["traceId"] == workflow_id]
    assert len(in_workflow) == 5
    assert {attribute(s, "kilostar.trace_id") for s in in_workflow} == {workflow_id}


def test_otlp_endpoint_sends_the_same_traffic_to_a_collector(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    out = tmp_path / "sent.jsonl"
    done = run_demo("--otlp-endpoint", f"http://{receiver.grpc_endpoint}", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"spans to http://{receiver.grpc_endpoint} (grpc)" in done.stdout
    assert "request demo-" not in done.stdout  # no trees: the spans went to the collector
    calls = calls_of(done.stdout)
    delivered = int(re.search(r"(\d+) spans delivered to", done.stdout).group(1))  # type: ignore[union-attr]
    spans = receiver.wait_for_spans(delivered)
    assert len(spans) == delivered
    assert {s.attributes.get("kilostar.request_id") for s in spans if s.kind != "CLIENT"} == {
        c[3] for c in calls
    }
    workflow_id = calls[2][4]
    assert f"kilostar.request_id=demo-plan-1, or paste the workflow trace_id {workflow_id}" in (
        done.stdout
    )
    assert any(s.trace_id == workflow_id and s.is_root for s in spans)
    # --out holds exactly the spans the collector received.
    assert f"written as OTLP/JSON lines to {out}" in done.stdout
    written = wire_spans(out)
    assert sorted((s["traceId"], s["spanId"]) for s in written) == sorted(
        (s.trace_id, s.span_id) for s in spans
    )


def test_otlp_endpoint_over_http_through_the_rotel_collector(
    receiver: OtlpReceiver, rotel_to: str
) -> None:
    base = rotel_to.removesuffix("/v1/traces")
    done = run_demo("--otlp-endpoint", base, "--protocol", "http/protobuf")
    assert done.returncode == 0, done.stderr
    workflow_id = calls_of(done.stdout)[2][4]
    spans = receiver.wait_for_spans(15)
    root = next(s for s in spans if s.name == "invoke_workflow plan")
    assert root.trace_id == workflow_id
    (linked,) = root.links
    server = next(s for s in spans if (s.trace_id, s.span_id) == linked)
    assert server.name == "POST /plan" and server.kind == "SERVER"
    assert all(s.transport == "grpc" for s in spans)  # rotel re-exported them


def test_an_unreachable_collector_is_an_error_not_a_silent_success() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        done = run_demo("--otlp-endpoint", f"http://127.0.0.1:{port}")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kilostar-otel demo: error: 15 span(s) could not be sent to")


def test_a_bad_endpoint_is_a_usage_error() -> None:
    done = run_demo("--otlp-endpoint", "http://127.0.0.1:4317/some/path")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "gRPC endpoint cannot have a path" in done.stderr


@pytest.mark.ray
def test_with_ray_the_steps_run_as_ray_tasks_inside_the_workflow(tmp_path: Path) -> None:
    out = tmp_path / "spans.jsonl"
    done = run_demo("--ray", "--out", str(out))
    assert done.returncode == 0, done.stderr
    workflow_id = calls_of(done.stdout)[2][4]
    spans = wire_spans(out)
    tasks = [s for s in spans if s["name"].startswith("ray.task")]
    assert len(tasks) == 2 and all(s["traceId"] == workflow_id for s in tasks)
    steps = {s["name"]: s for s in spans if s["traceId"] == workflow_id}
    for name in ("step rank", "step summarise"):
        assert steps[name]["parentSpanId"] in {t["spanId"] for t in tasks}
        assert attribute(steps[name], "kilostar.request_id") == "demo-plan-1"
    assert "ray.task demo_step" in done.stdout
