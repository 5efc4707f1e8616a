"""Forked multiprocessing children flush their spans with flush_at_process_exit, and only then."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kilostar_otel.viewer import OtlpReceiver
from tests.otlp.conftest import clean_env, run_script

from .pool_app import TASKS
from .sigterm_app import EXIT_TIMEOUT_MILLIS, SPANS

SIGTERM_APP = Path(__file__).parent / "sigterm_app.py"
SLACK = 2.5  # the handler's margin (0.5 s) and a busy 2-core machine


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


@pytest.mark.parametrize("held", ["nothing", "queue", "send", "threads", "spans"])
def test_sigterm_ends_the_process_within_the_exit_timeout_whatever_the_main_thread_does(
    receiver: OtlpReceiver, held: str
) -> None:
    # Python runs the handler in the main thread between two bytecodes: the exit must not wait
    # for a lock the interrupted code holds (and never releases).
    proc = subprocess.Popen(
        [sys.executable, str(SIGTERM_APP), receiver.http_endpoint, held],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # "spans": the main thread ends spans meanwhile.
        time.sleep({"spans": 0.3}.get(held, 0))
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=EXIT_TIMEOUT_MILLIS / 1000 + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"holding {held!r}, the process did not exit after SIGTERM")
        elapsed = time.monotonic() - start
    finally:
        proc.kill()
        _, errors = proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, errors
    assert elapsed < EXIT_TIMEOUT_MILLIS / 1000 + SLACK, errors
    if held in ("nothing", "threads"):  # the export is free to run: the spans arrive
        spans = receiver.wait_for_spans(SPANS, timeout=5)
        assert sorted(s.name for s in spans) == sorted(f"queued-{n}" for n in range(SPANS))
