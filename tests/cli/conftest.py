"""Fixtures for the CLI and viewer tests: real spans exported over OTLP to the embedded receiver."""

from __future__ import annotations

import os

# gRPC's fork handlers and subprocesses started by tests do not mix; set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import subprocess
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from kilostar_otel import KiloStarSpanProcessor
from kilostar_otel.viewer import OtlpReceiver
from tests.otlp.conftest import free_port, wait_for_port
from tests.rotel_agent import AGENT, agent_env


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A started OTLP receiver on free 127.0.0.1 ports, stopped after the test."""
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture
def otlp_provider(receiver: OtlpReceiver) -> Iterator[TracerProvider]:
    """A private SDK provider (not the global one) exporting each span over OTLP/gRPC on end."""
    provider = TracerProvider(resource=Resource.create({"service.name": "tree-test"}))
    provider.add_span_processor(KiloStarSpanProcessor())
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True))
    )
    yield provider
    provider.shutdown()


@pytest.fixture
def rotel_to(receiver: OtlpReceiver) -> Iterator[str]:
    """A real rotel collector on loopback, forwarding to ``receiver``; yields its HTTP endpoint."""
    agent = AGENT
    grpc_port, http_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            str(agent),
            "start",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{http_port}",
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            f"http://{receiver.grpc_endpoint}",
            "--otlp-exporter-protocol",
            "grpc",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=agent_env(),
    )
    try:
        # A first start on a fresh machine can be slow; a process that exits says so at once.
        wait_for_port(http_port, process, timeout=30)
        yield f"http://127.0.0.1:{http_port}/v1/traces"
    finally:
        process.terminate()
        process.wait(timeout=10)
