"""Fixtures for the OTLP tests: the embedded receiver and the rotel collector on free ports."""

from __future__ import annotations

import os

# gRPC's fork handlers and subprocesses started by tests do not mix; set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from kilostar_otel.viewer import OtlpReceiver
from tests.rotel_agent import AGENT, agent_env

HERE = Path(__file__).parent
ROTEL_AGENT = AGENT


def free_port() -> int:
    """A port nothing listens on right now (127.0.0.1)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


def clean_env(**overrides: str) -> dict[str, str]:
    """The current environment without any OTEL_/ROTEL_ setting, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ROTEL_"))}
    env["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    env.update(overrides)
    return env


def run_script(name: str, *args: str, env: dict[str, str], prefix: tuple[str, ...] = ()) -> Any:
    """Run ``tests/otlp/<name>`` in a fresh interpreter; return the JSON of its last line."""
    result = subprocess.run(
        [*prefix, sys.executable, str(HERE / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A started OTLP receiver (gRPC + HTTP) on free 127.0.0.1 ports, stopped after the test."""
    with OtlpReceiver() as rx:
        yield rx


class Rotel:
    """A running ``rotel-agent``: where to send OTLP to it."""

    def __init__(self, grpc_port: int, http_port: int) -> None:
        self.grpc_endpoint = f"http://127.0.0.1:{grpc_port}"
        self.http_endpoint = f"http://127.0.0.1:{http_port}"


@pytest.fixture
def start_rotel(tmp_path: Path) -> Iterator[Callable[[str, str], Rotel]]:
    """Start ``rotel-agent`` exporting to ``endpoint`` over ``protocol`` ("grpc" or "http")."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(endpoint: str, protocol: str) -> Rotel:
        grpc_port, http_port = free_port(), free_port()
        n = len(procs)
        log = (tmp_path / f"rotel-{n}.out").open("wb")
        proc = subprocess.Popen(
            [
                str(ROTEL_AGENT),
                "start",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{grpc_port}",
                "--otlp-http-endpoint",
                f"127.0.0.1:{http_port}",
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                endpoint,
                "--otlp-exporter-protocol",
                protocol,
                "--batch-timeout",
                "50ms",
                "--pid-file",
                str(tmp_path / f"rotel-{n}.pid"),
                "--log-file",
                str(tmp_path / f"rotel-{n}.log"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=agent_env(clean_env()),
        )
        log.close()
        procs.append(proc)
        wait_for_port(grpc_port, proc)
        wait_for_port(http_port, proc)
        return Rotel(grpc_port, http_port)

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
