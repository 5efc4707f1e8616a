"""``kilostar-otel serve`` as a real process: OTLP in over gRPC and HTTP, trees out, Ctrl-C out."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind

from kilostar_otel import KiloStarSpanProcessor, request_id_scope, workflow, wrap

LISTENING = re.compile(r"OTLP gRPC on (127\.0\.0\.1:\d+), OTLP HTTP on (http://127\.0\.0\.1:\d+)/")


@dataclass
class Serve:
    process: subprocess.Popen[str]
    grpc: str
    http: str
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    _out: queue.Queue[str] = field(default_factory=queue.Queue)

    def wait_for_line(self, pattern: str, timeout: float = 20.0) -> str:
        """The first stdout line (already seen or new) matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.out:
                if re.search(pattern, line):
                    return line
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line matching {pattern!r} in {self.out}"
            try:
                self.out.append(self._out.get(timeout=remaining))
            except queue.Empty:
                continue

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=20)
        time.sleep(0)  # let the readers drain
        while not self._out.empty():
            self.out.append(self._out.get())
        return code


def pump(stream: IO[str], sink: queue.Queue[str] | list[str]) -> None:
    for line in stream:
        if isinstance(sink, list):
            sink.append(line.rstrip("\n"))
        else:
            sink.put(line.rstrip("\n"))


def start_serve(*extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1", "GRPC_ENABLE_FORK_SUPPORT": "false"}
    return subprocess.Popen(
        [sys.executable, "-m", "kilostar_otel.cli", "serve", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    process = start_serve(
        "--grpc-port", "0", "--http-port", "0", "--settle", "0.2", "--max-wait", "120",
        "--out", str(tmp_path / "served.jsonl"),
    )  # fmt: skip
    assert process.stderr is not None and process.stdout is not None
    first = process.stderr.readline()
    match = LISTENING.search(first)
    assert match, first
    served = Serve(process, match.group(1), match.group(2))
    threading.Thread(target=pump, args=(process.stdout, served._out), daemon=True).start()
    threading.Thread(target=pump, args=(process.stderr, served.err), daemon=True).start()
    try:
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def provider_for(exporter: SpanExporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "serve-test"}))
    provider.add_span_processor(KiloStarSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_a_request_is_printed_once_its_late_workflow_arrived_then_ctrl_c_exits_cleanly(
    serve: Serve, tmp_path: Path
) -> None:
    grpc = provider_for(GrpcSpanExporter(endpoint=serve.grpc, insecure=True))
    http = provider_for(HttpSpanExporter(endpoint=serve.http + "/v1/traces"))
    tracer = grpc.get_tracer("serve-test")
    release = threading.Event()
    started: dict[str, str] = {}

    def background_workflow() -> None:  # outlives the request that started it
        with workflow("report", tracer_provider=grpc) as wf:
            started["trace_id"] = wf.trace_id
            with tracer.start_as_current_span("step summarise"):
                release.wait(timeout=30)

    with request_id_scope("req-late-wf"):
        with tracer.start_as_current_span("POST /report", kind=SpanKind.SERVER):
            with tracer.start_as_current_span("enqueue"):
                worker = threading.Thread(target=wrap(background_workflow))
                worker.start()
                while "trace_id" not in started:
                    time.sleep(0.01)
    # The request trace has arrived, its workflow has not. A second, complete request over HTTP:
    with request_id_scope("req-plain"):
        with http.get_tracer("serve-test").start_as_current_span("GET /hello"):
            pass
    serve.wait_for_line(r"^request req-plain  GET /hello")
    # req-plain settled and was printed; req-late-wf arrived earlier but waits for its workflow.
    assert not any("req-late-wf" in line for line in serve.out)

    release.set()
    worker.join(timeout=30)
    header = serve.wait_for_line(r"^request req-late-wf")
    serve.wait_for_line(r"step summarise")
    block = serve.out[serve.out.index(header) :]
    names = [re.sub(r"^[│├└─ ]+", "", line).split("  ")[0] for line in block[:5]]
    assert names == [
        "request req-late-wf",
        "POST /report",
        "enqueue",
        "invoke_workflow report",
        "step summarise",
    ]
    assert f"trace_id={started['trace_id']}" in block[3]
    assert block[3].index("workflow") > block[2].index("enqueue")  # nested under its starter
    grpc.shutdown()
    http.shutdown()

    assert serve.stop() == 0
    assert not any("Traceback" in line for line in serve.err), serve.err
    assert serve.err[-1].startswith("kilostar-otel serve: stopped after 2 trace group(s);")
    lines = (tmp_path / "served.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5  # one OTLP/JSON line per export request: 5 spans, one per request


def test_a_second_service_exporting_on_the_default_batch_delay_lands_in_the_same_block(
    serve: Serve,
) -> None:
    # The gateway exports each span at once; the backend it calls uses the SDK's default batch
    # processor (schedule delay 5 s), so its server span arrives seconds after the gateway's.
    gateway = provider_for(GrpcSpanExporter(endpoint=serve.grpc, insecure=True))
    backend = TracerProvider(resource=Resource.create({"service.name": "backend"}))
    backend.add_span_processor(KiloStarSpanProcessor())
    backend.add_span_processor(
        BatchSpanProcessor(GrpcSpanExporter(endpoint=serve.grpc, insecure=True))
    )
    with request_id_scope("req-two-services"):
        with gateway.get_tracer("gw").start_as_current_span("GET /two", kind=SpanKind.SERVER):
            with gateway.get_tracer("gw").start_as_current_span("GET", kind=SpanKind.CLIENT):
                with backend.get_tracer("be").start_as_current_span(
                    "GET /inner", kind=SpanKind.SERVER
                ):
                    pass
    sent = time.monotonic()
    header = serve.wait_for_line(r"^request req-two-services", timeout=30)
    assert time.monotonic() - sent > 3  # held for the backend's batch, not printed at settle
    serve.wait_for_line(r"GET /inner")
    block = serve.out[serve.out.index(header) :]
    assert "3 spans" in header
    names = [re.sub(r"^[│├└─ ]+", "", line).split("  ")[0] for line in block[1:4]]
    assert names == ["GET /two", "GET", "GET /inner"]
    gateway.shutdown()
    backend.shutdown()
    assert serve.stop() == 0
    assert sum("req-two-services" in line for line in serve.out) == 1


def test_ctrl_c_prints_what_is_still_pending(serve: Serve, tmp_path: Path) -> None:
    grpc = provider_for(GrpcSpanExporter(endpoint=serve.grpc, insecure=True))
    tracer = grpc.get_tracer("serve-test")
    release = threading.Event()

    def never_finishing_workflow() -> None:
        with workflow("forever", tracer_provider=grpc), tracer.start_as_current_span("wait"):
            release.wait(timeout=30)

    with request_id_scope("req-pending"), tracer.start_as_current_span("POST /x"):
        worker = threading.Thread(target=wrap(never_finishing_workflow))
        worker.start()
    served = tmp_path / "served.jsonl"
    deadline = time.monotonic() + 20
    while not served.read_text(encoding="utf-8"):  # the request span has arrived
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert serve.stop() == 0
    grpc.shutdown()  # the workflow's spans end after this and are not exported
    release.set()
    worker.join(timeout=30)
    header = serve.wait_for_line(r"^request req-pending")
    serve.wait_for_line(r"\(linked trace")
    assert "(linked trace" in "\n".join(serve.out[serve.out.index(header) :])


def test_a_busy_port_is_a_one_line_error_and_exit_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = start_serve("--grpc-port", "0", "--http-port", str(port))
        out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("kilostar-otel serve: error: cannot listen on 127.0.0.1")


def test_without_out_every_request_is_still_printed_once() -> None:
    process = start_serve("--grpc-port", "0", "--http-port", "0", "--settle", "0.1")
    assert process.stderr is not None and process.stdout is not None
    match = LISTENING.search(process.stderr.readline())
    assert match
    served = Serve(process, match.group(1), match.group(2))
    threading.Thread(target=pump, args=(process.stdout, served._out), daemon=True).start()
    threading.Thread(target=pump, args=(process.stderr, served.err), daemon=True).start()
    try:
        provider = provider_for(GrpcSpanExporter(endpoint=served.grpc, insecure=True))
        tracer = provider.get_tracer("serve-test")
        for n in range(3):
            with request_id_scope(f"req-{n}"), tracer.start_as_current_span(f"GET /{n}"):
                pass
            served.wait_for_line(rf"^request req-{n}  GET /{n}")
        provider.shutdown()
        assert served.stop() == 0
        assert sum(line.startswith("request ") for line in served.out) == 3
        assert served.err[-1] == "kilostar-otel serve: stopped after 3 trace group(s)."
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
