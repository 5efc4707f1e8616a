"""``make jaeger`` (tools/backends/run.sh): Jaeger and the collector on 127.0.0.1, the endpoints
printed, a trace through them, and both stopped by Ctrl-C (SIGINT to the script)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

import kilostar_otel
from kilostar_otel import workflow

from .conftest import BACKENDS, backend_binary, clean_env, free_port

# Runs a command with SIGINT at its default disposition (the script's own pid stays the same).
_WITH_CTRL_C = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_run_sh_prints_the_endpoints_carries_a_trace_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    backend_binary("jaeger"), backend_binary("collector")  # fail early, with the hint
    ports = {
        name: free_port()
        for name in (
            "grpc",
            "http",
            "health",
            "metrics",
            "j_grpc",
            "j_http",
            "query",
            "j_qgrpc",
            "j_health",
        )
    }
    env = clean_env(
        COLLECTOR_OTLP_GRPC_ENDPOINT=f"127.0.0.1:{ports['grpc']}",
        COLLECTOR_OTLP_HTTP_ENDPOINT=f"127.0.0.1:{ports['http']}",
        COLLECTOR_HEALTH_ENDPOINT=f"127.0.0.1:{ports['health']}",
        COLLECTOR_METRICS_PORT=str(ports["metrics"]),
        JAEGER_OTLP_GRPC_ENDPOINT=f"127.0.0.1:{ports['j_grpc']}",
        JAEGER_OTLP_HTTP_ENDPOINT=f"127.0.0.1:{ports['j_http']}",
        JAEGER_QUERY_HTTP_ENDPOINT=f"127.0.0.1:{ports['query']}",
        JAEGER_QUERY_GRPC_ENDPOINT=f"127.0.0.1:{ports['j_qgrpc']}",
        JAEGER_HEALTH_ENDPOINT=f"127.0.0.1:{ports['j_health']}",
        TAIL_SAMPLING_DECISION_WAIT="1s",
        BATCH_TIMEOUT="100ms",
        TMPDIR=str(tmp_path),
    )
    script = subprocess.Popen(
        # Ctrl-C as a terminal delivers it: a shell that starts with SIGINT ignored (a job sent
        # to the background by a non-interactive shell, as some CI runners do) cannot trap it.
        [sys.executable, "-c", _WITH_CTRL_C, "bash", str(BACKENDS / "run.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(script.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any(line.startswith("Try, in another terminal") for line in lines):
            assert script.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        banner = "".join(lines)
        assert f"send OTLP/gRPC to    http://127.0.0.1:{ports['grpc']}" in banner
        assert f"send OTLP/HTTP to    http://127.0.0.1:{ports['http']}" in banner
        assert f"Jaeger UI and API    http://127.0.0.1:{ports['query']}" in banner
        assert "decision_wait 1s" in banner

        app = kilostar_otel.configure(
            service_name="kilostar-make-jaeger",
            endpoint=f"http://127.0.0.1:{ports['grpc']}",
            set_global=False,
        )
        try:
            with workflow("make jaeger", tracer_provider=app.tracer_provider) as wf:
                pass
            assert app.force_flush(10_000)
        finally:
            app.shutdown()
        url = f"http://127.0.0.1:{ports['query']}/api/traces/{wf.trace_id}"
        deadline = time.monotonic() + 30
        while httpx.get(url, timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the trace never reached Jaeger"
            time.sleep(0.2)
    finally:
        if script.poll() is None:
            os.kill(script.pid, signal.SIGINT)  # what Ctrl-C sends the script
        try:
            script.wait(30)
        except subprocess.TimeoutExpired:
            script.terminate()  # the script's TERM trap stops both back ends too
            script.wait(30)
            raise
        reader.join(5)
    assert script.returncode == 0, "".join(lines)
    assert any(line.startswith("stopped the collector and Jaeger") for line in lines)
    for port in (ports["grpc"], ports["query"], ports["health"], ports["j_grpc"]):
        assert not port_open(port), f"port {port} still open after Ctrl-C"
