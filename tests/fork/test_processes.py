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
from .sigterm_app import EXIT_TIMEOUT_MILLIS, FORKS, SPANS

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


@pytest.mark.parametrize("held", ["nothing", "queue", "send", "threads", "spans", "wait"])
def test_sigterm_ends_the_process_within_the_exit_timeout_whatever_the_main_thread_does(
    receiver: OtlpReceiver, held: str
) -> None:
    # Python runs the handler in the main thread between two bytecodes: the exit must not wait
    # for a lock the interrupted code holds (and never releases), nor for the main thread to get
    # back to the interpreter at all ("wait": in CI a pool's terminate() waited 120 s for that).
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
        # "spans": the main thread ends spans meanwhile; "wait": it gets to its wait in C (a
        # signal that came before would be handled on its way there, in the interpreter).
        time.sleep({"spans": 0.3, "wait": 0.5}.get(held, 0))
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
    if held in ("nothing", "threads", "wait"):  # the export is free to run: the spans arrive
        spans = receiver.wait_for_spans(SPANS, timeout=5)
        assert sorted(s.name for s in spans) == sorted(f"queued-{n}" for n in range(SPANS))


def test_a_forked_child_s_sigterm_does_not_end_its_parent(receiver: OtlpReceiver) -> None:
    # The child inherits the parent's SIGTERM handler and wake-up fd. A SIGTERM that reaches it
    # before its at-fork hooks ran must not wake the parent's watcher (the parent would exit),
    # nor be lost (Python clears the signals a child received before its own at-fork reset).
    report = run_script("../fork/sigterm_app.py", receiver.http_endpoint, "forks", env=clean_env())
    assert report == {"children": [128 + signal.SIGTERM] * FORKS, "parent": "alive"}
