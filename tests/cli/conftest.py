"""Fixtures for the CLI and viewer tests: real spans exported over OTLP to the embedded receiver."""

from __future__ import annotations

import os

# gRPC's fork handlers and subprocesses started by tests do not mix; set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from kilostar_otel import KiloStarSpanProcessor
from kilostar_otel.viewer import OtlpReceiver


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
