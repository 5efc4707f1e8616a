"""The process exits within exit_timeout_millis when the back end is down, and says what it lost."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.otlp.conftest import clean_env

APP = Path(__file__).parent / "exit_app.py"
SLACK = 5.0  # interpreter start-up and teardown on a busy 2-core machine


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts connections and never reads or answers."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        yield int(sock.getsockname()[1])


def _exit_time(
    endpoint: str, protocol: str, spans: int, timeout: int | None, env: dict[str, str]
) -> tuple[float, str]:
    command = [sys.executable, str(APP), endpoint, protocol, str(spans)]
    if timeout is not None:
        command.append(str(timeout))
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    start = time.monotonic()
    _, errors = proc.communicate(timeout=120)
    assert proc.returncode == 0, errors
    return time.monotonic() - start, errors


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize(("spans", "timeout"), [(100, 1000), (8192, 1000), (8192, None)])
def test_exit_with_the_back_end_down_is_bounded_by_exit_timeout_millis(
    black_hole: int, protocol: str, spans: int, timeout: int | None
) -> None:
    endpoint = f"http://127.0.0.1:{black_hole}"
    if protocol == "http/protobuf":
        endpoint += "/v1/traces"
    elapsed, errors = _exit_time(endpoint, protocol, spans, timeout, clean_env())
    bound = (timeout or 5000) / 1000  # the documented default: 5 s
    assert elapsed < bound + SLACK, errors
    assert "kilostar-otel lost" in errors  # the loss is reported, not silent


def test_the_variable_sets_the_exit_timeout(black_hole: int) -> None:
    env = clean_env(KILOSTAR_EXIT_TIMEOUT_MILLIS="500")
    elapsed, errors = _exit_time(
        f"http://127.0.0.1:{black_hole}/v1/traces", "http/protobuf", 8192, None, env
    )
    assert elapsed < 0.5 + SLACK, errors
