"""The OTLP back end goes away: down at start, taken down mid-run, brought back on the same port.

A traced service (``outage_app.py``, global ``configure()`` in its own interpreter) exports over
OTLP to the embedded receiver. Through every phase each request succeeds, no exception escapes,
the export queue never holds more than ``max_queue_size`` spans (the rest are counted as
dropped), spans flow again once the receiver is back, and ``shutdown()`` returns within its
timeout even while the back end is down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from kilostar_otel.viewer import OtlpReceiver
from tests.integrations.conftest import wait_until
from tests.otlp.conftest import clean_env, free_port

HERE = Path(__file__).parent
MAX_QUEUE = 256
SPANS_PER_REQUEST = 4  # server span, workflow root, two steps
SHUTDOWN_TIMEOUT_MS = 2000


class Service:
    """The traced service in its subprocess, and a client for it."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(timeout=30)

    def requests(self, prefix: str, count: int) -> list[str]:
        """Send ``count`` requests (8 at a time), ids ``<prefix>-<n>``; all must succeed."""

        def one(n: int) -> str:
            rid = f"{prefix}-{n}"
            response = self.client.get(f"{self.url}/work", headers={"X-Request-Id": rid})
            assert response.status_code == 200, response.text
            assert response.json() == {"request_id": rid}
            return rid

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, range(count)))

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.client.get(f"{self.url}/stats").json()
        return stats


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[[str, str], Service]]:
    """Start ``outage_app.py`` exporting to ``endpoint``; it is stopped by pid at teardown."""
    started: list[Service] = []

    def start(endpoint: str, protocol: str) -> Service:
        stderr = (tmp_path / f"service-{len(started)}.err").open("w")
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "outage_app.py"), endpoint, protocol, str(MAX_QUEUE)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=clean_env(PYTHONPATH=str(HERE.parent.parent)),
        )
        stderr.close()
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, (tmp_path / f"service-{len(started)}.err").read_text()
        service = Service(proc, json.loads(line)["port"])
        started.append(service)
        return service

    yield start
    for service in started:
        service.client.close()
        if service.proc.poll() is None:
            os.kill(service.proc.pid, signal.SIGTERM)
            try:
                service.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(service.proc.pid, signal.SIGKILL)
                service.proc.wait(timeout=10)


def _received_ids(receiver: OtlpReceiver) -> set[str]:
    return {str(s.attributes.get("kilostar.request_id")) for s in receiver.spans()}


def _arrived(receiver: OtlpReceiver, ids: list[str]) -> set[str]:
    """Wait until spans of every request in ``ids`` reached ``receiver``."""
    return wait_until(lambda: set(ids) <= (seen := _received_ids(receiver)) and seen, timeout=30)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.timeout(240)
def test_requests_never_notice_the_back_end_going_away_and_spans_flow_again(
    protocol: str, start_service: Callable[[str, str], Service]
) -> None:
    grpc_port, http_port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{grpc_port if protocol == 'grpc' else http_port}"
    # 1. The back end is down from the start (nothing listens on its port).
    service = start_service(endpoint, protocol)
    down_at_start = service.requests("req-down0", 300)
    stats = service.stats()
    assert stats["escaped"] == 0, stats["escapes"]
    assert stats["worker_alive"]
    assert stats["ended"] == 300 * SPANS_PER_REQUEST
    # Queued spans stay bounded; what did not fit was dropped and counted.
    assert stats["max_queued"] <= MAX_QUEUE
    assert stats["dropped"] > 0
    dropped_while_down = stats["dropped"]

    # 2. The back end comes up: new spans (and what was still queued) arrive.
    receiver = OtlpReceiver(grpc_port=grpc_port, http_port=http_port).start()
    try:
        up = service.requests("req-up1", 50)
        _arrived(receiver, up)
        # What was still queued when the back end came up is delivered too.
        from_the_outage = {i for i in _received_ids(receiver) if i.startswith("req-down0")}
        assert from_the_outage and from_the_outage <= set(down_at_start)
    finally:
        receiver.stop()
    received = len(receiver.spans())

    # 3. Taken down mid-run: requests still succeed; then back on the same port.
    down_again = service.requests("req-down1", 300)
    stats = service.stats()
    assert stats["escaped"] == 0, stats["escapes"]
    assert stats["max_queued"] <= MAX_QUEUE
    assert stats["dropped"] > dropped_while_down
    receiver = OtlpReceiver(grpc_port=grpc_port, http_port=http_port).start()
    try:
        recovered = service.requests("req-up2", 50)
        _arrived(receiver, recovered)
        # A new receiver gets only spans from after the first one went away.
        assert {i for i in _received_ids(receiver) if i.startswith("req-")} <= set(
            down_again + recovered
        )
    finally:
        receiver.stop()
    received += len(receiver.spans())

    # 4. Shut down while the back end is down, with a full queue: within the timeout.
    service.requests("req-down2", 100)
    stats = service.stats()
    assert stats["escaped"] == 0 and stats["worker_alive"], stats
    shutdown = service.client.post(
        f"{service.url}/shutdown", params={"timeout_ms": SHUTDOWN_TIMEOUT_MS}
    ).json()
    assert shutdown["elapsed"] < SHUTDOWN_TIMEOUT_MS / 1000 + 1.0
    # After shutdown the service still answers; its spans are simply not exported.
    service.requests("req-after", 10)
    final = service.stats()
    assert final["escaped"] == 0, final["escapes"]
    # Spans neither received nor counted as dropped were in a batch whose export failed.
    print(
        f"\noutage ({protocol}): {final['ended']} spans ended, {received} received; dropped "
        f"{dropped_while_down} while down at start, {stats['dropped']} before shutdown, "
        f"{final['dropped']} in all; lost in failed exports "
        f"{final['ended'] - received - final['dropped']}; max queued "
        f"{final['max_queued']}/{MAX_QUEUE}; shutdown took {shutdown['elapsed']:.2f}s "
        f"(timeout {SHUTDOWN_TIMEOUT_MS / 1000:.0f}s)"
    )
