"""Forked multiprocessing children flush their spans with flush_at_process_exit, and only then."""

from __future__ import annotations

import time

import pytest

from kilostar_otel.viewer import OtlpReceiver
from tests.otlp.conftest import clean_env, run_script

from .pool_app import TASKS


@pytest.mark.parametrize("mode", ["with", "join"])
def test_pool_children_flush_with_the_initializer(receiver: OtlpReceiver, mode: str) -> None:
    report = run_script("../fork/pool_app.py", receiver.http_endpoint, mode, env=clean_env())
    spans = receiver.wait_for_spans(TASKS, timeout=20)
    tasks = sorted(int(s.attributes["task.n"]) for s in spans if s.name == "task")
    assert tasks == list(range(TASKS))  # every task's span, once
    assert len({s.attributes["task.pid"] for s in spans}) == report["workers"] > 1


def test_without_the_initializer_the_children_lose_their_spans(receiver: OtlpReceiver) -> None:
    run_script("../fork/pool_app.py", receiver.http_endpoint, "none", env=clean_env())
    time.sleep(1.0)
    assert [s for s in receiver.spans() if s.name == "task"] == []


def test_a_child_spawned_with_preexec_fn_survives_without_grpc_fork_support(
    receiver: OtlpReceiver,
) -> None:
    # Between fork and exec the at-fork hook gives the child a fresh pipeline; the parent's
    # exporter (its gRPC channel) must stay untouched there: freeing it crashed the child.
    env = clean_env()
    env["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    report = run_script("../fork/spawn_app.py", f"http://{receiver.grpc_endpoint}", env=env)
    assert report == {"flushed": True, "returncodes": [0] * 10, "children": ["child ran\n"]}
    assert len(receiver.wait_for_spans(10)) == 10
