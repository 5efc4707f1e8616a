"""Delivery proof: 10,000 traced calls, and every one of their spans arrives at the receiver.

The calls run where spans are most easily lost: tasks on pool workers that Ray retires and
starts again (``max_calls``; half a CPU each, so Ray runs more workers than its soft limit and
reaps the idle ones between bursts), and actors that are terminated gracefully right after their
last call, without waiting for it. Each span is counted at the OTLP receiver by its request id.
The workers run the default flush mode, ``idle`` (the session cluster's job uses ``wait``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import ray

from kilostar_otel import new_request_id, request_id_scope
from kilostar_otel.integrations import ray as kray
from kilostar_otel.viewer import OtlpReceiver

pytestmark = pytest.mark.ray

TASK_BURSTS = 6
TASKS_PER_BURST = 1000
MAX_CALLS = 1000  # a pool worker exits after this many tasks; Ray starts a new one
ACTORS = 4
CALLS_PER_ACTOR = 1000


@kray.remote(max_calls=MAX_CALLS, num_cpus=0.5)
def proof_task(n: int) -> int:
    return os.getpid()


@kray.remote
class ProofActor:
    def call(self, n: int) -> int:
        return os.getpid()


def _count(receiver: OtlpReceiver, request_id: str, expected: int) -> dict[str, int]:
    """Spans of this request per name, once ``expected`` arrived or nothing more arrives."""
    last, still_since = -1, time.monotonic()
    while True:
        counts: dict[str, int] = {}
        for span in receiver.spans():
            if span.attributes.get("kilostar.request_id") == request_id:
                counts[span.name] = counts.get(span.name, 0) + 1
        total = sum(counts.values())
        now = time.monotonic()
        if total >= expected or now - still_since > 10:
            return counts
        if total != last:
            last, still_since = total, now
        time.sleep(0.2)


def test_ten_thousand_calls_on_recycled_workers_and_ended_actors_lose_no_span(
    ray_cluster: Any, ray_receiver: OtlpReceiver
) -> None:
    request_id = new_request_id()
    task_pids: set[int] = set()
    actor_pids: set[int] = set()
    idle = {"env_vars": {kray.FLUSH_MODE_ENV: kray.DEFAULT_FLUSH_MODE}}
    assert kray.DEFAULT_FLUSH_MODE == "idle"
    task = proof_task.options(runtime_env=idle)
    with request_id_scope(request_id):
        # The actors start while the tasks run.
        actors = [ProofActor.options(runtime_env=idle).remote() for _ in range(ACTORS)]
        for burst in range(TASK_BURSTS):
            task_pids.update(ray.get([task.remote(n) for n in range(TASKS_PER_BURST)]))
            if burst % 3 == 1:
                time.sleep(1.5)  # idle: Ray reaps the workers above its soft limit
        for actor in actors:
            actor_pids.update(ray.get([actor.call.remote(n) for n in range(CALLS_PER_ACTOR)]))
            kray.unwrap(actor).__ray_terminate__.remote()  # graceful; not waited for
    tasks, calls = TASK_BURSTS * TASKS_PER_BURST, ACTORS * CALLS_PER_ACTOR
    counts = _count(ray_receiver, request_id, tasks + calls)
    assert counts == {"ray.task proof_task": tasks, "ray.actor ProofActor.call": calls}
    # The workers really were retired and started again, and every actor had its own process.
    assert len(task_pids) >= tasks // MAX_CALLS
    assert len(actor_pids) == ACTORS
