"""Honest counts: every span ends up delivered, failed, dropped or still queued, exactly once;
the queue is bounded in bytes too."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import closing

import pytest

from kilostar_otel.configure import Telemetry, configure
from kilostar_otel.viewer import OtlpReceiver

from .conftest import free_port


def _accounted(telemetry: Telemetry) -> int:
    pipeline = telemetry._pipeline  # private, for the spans queued and in flight right now
    assert pipeline is not None and pipeline._queue is not None
    return (
        telemetry.delivered_spans
        + telemetry.failed_spans
        + telemetry.dropped_spans
        + len(pipeline._queue)
        + pipeline.in_flight
    )


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts connections and never answers: an export hangs until its timeout."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        yield int(sock.getsockname()[1])


def test_the_drop_count_is_exact_under_concurrency(black_hole: int) -> None:
    telemetry = configure(
        set_global=False,
        endpoint=f"http://127.0.0.1:{black_hole}/v1/traces",
        protocol="http/protobuf",
        timeout=30,
        max_queue_size=64,
        max_export_batch_size=8,
        schedule_delay_millis=60_000,
    )
    tracer = telemetry.get_tracer("race")
    threads, per_thread = 8, 2_000
    start = threading.Barrier(threads)

    def end_spans() -> None:
        start.wait()
        for _ in range(per_thread):
            tracer.start_span("s").end()

    workers = [threading.Thread(target=end_spans) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert telemetry.dropped_spans > 0
    assert _accounted(telemetry) == threads * per_thread  # never over- (or under-) counted
    telemetry.shutdown(100)


def test_failed_exports_are_counted_and_flush_says_so(receiver_port: int) -> None:
    telemetry = configure(
        set_global=False,
        endpoint=f"http://127.0.0.1:{receiver_port}/v1/traces",
        protocol="http/protobuf",
        timeout=1,  # each export gives up (retries included) after a second
        schedule_delay_millis=60_000,
    )
    tracer = telemetry.get_tracer("failed")
    for _ in range(10):
        tracer.start_span("lost").end()
    assert telemetry.force_flush(10_000) is False  # the SDK's flush would say True
    assert telemetry.failed_spans == 10
    assert telemetry.delivered_spans == 0
    with OtlpReceiver(http_port=receiver_port) as receiver:
        for _ in range(5):
            tracer.start_span("kept").end()
        assert telemetry.force_flush(10_000) is True
        assert len(receiver.wait_for_spans(5)) == 5
    assert (telemetry.delivered_spans, telemetry.failed_spans) == (5, 10)
    assert _accounted(telemetry) == 15
    telemetry.shutdown(1000)


@pytest.fixture
def receiver_port() -> int:
    """A free port where a receiver starts later in the test (refused until then)."""
    return free_port()


def test_the_queue_is_bounded_in_bytes(receiver_port: int) -> None:
    budget = 1024 * 1024
    telemetry = configure(
        set_global=False,
        endpoint=f"http://127.0.0.1:{receiver_port}/v1/traces",
        protocol="http/protobuf",
        max_queue_bytes=budget,
        schedule_delay_millis=60_000,
    )
    tracer = telemetry.get_tracer("bytes")
    for n in range(100):
        span = tracer.start_span(f"big-{n}")
        span.set_attribute("payload", "x" * 64 * 1024)
        span.end()
    admitted = 100 - telemetry.dropped_spans  # the newest ones stay queued
    assert telemetry.queued_bytes <= budget
    assert 10 <= admitted <= 16  # 64 KiB and a little each: 15 fit in 1 MiB
    with OtlpReceiver(http_port=receiver_port) as receiver:
        assert telemetry.force_flush(10_000) is True
        names = {s.name for s in receiver.wait_for_spans(admitted)}
    assert names == {f"big-{n}" for n in range(100 - admitted, 100)}  # the oldest were dropped
    assert telemetry.delivered_spans == admitted
    assert telemetry.queued_bytes == 0
    assert _accounted(telemetry) == 100
    telemetry.shutdown(1000)
