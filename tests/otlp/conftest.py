"""Fixtures for the OTLP tests: the embedded receiver on free loopback ports, private providers."""

from __future__ import annotations

import os

# gRPC's fork handlers and subprocesses started by tests do not mix; set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Iterator

import pytest

from kilostar_otel.viewer import OtlpReceiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A started OTLP receiver (gRPC + HTTP) on free 127.0.0.1 ports, stopped after the test."""
    with OtlpReceiver() as rx:
        yield rx
