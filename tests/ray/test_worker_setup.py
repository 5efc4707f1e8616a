"""Worker set-up on the real cluster: log lines show the ids, and the job's own hook still runs.

The session cluster (conftest) is started with a ``worker_process_setup_hook`` of its own in the
``runtime_env``; ``worker_runtime_env`` must chain it after ``setup_worker``, never replace it.
"""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from kilostar_otel import new_request_id, request_id_scope, workflow
from kilostar_otel.integrations import ray as kray

from .workloads import log_lines, user_setup_hook

pytestmark = pytest.mark.ray


def _worker_lines(session_dir: Path, tag: str, count: int) -> list[str]:
    deadline = time.monotonic() + 30
    while True:
        lines = [
            line
            for path in (session_dir / "logs").glob("worker-*")
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
            if tag in line
        ]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_worker_log_lines_show_the_ids_and_the_jobs_own_hook_ran(ray_cluster: Any) -> None:
    tag = new_request_id("tag")
    with request_id_scope("req-ray-logs"), workflow("logs") as wf:
        out = ray.get(log_lines.remote(tag))
    assert out["user_hook"] == "ran after tracing"  # chained after setup_worker, not replaced
    lines = _worker_lines(Path(ray_cluster.address_info["session_dir"]), tag, 2)
    ids = rf"\[request_id=req-ray-logs trace_id={wf.trace_id} otel_trace_id={wf.trace_id} "
    ids += r"otel_span_id=[0-9a-f]{16}\]"
    stdlib = [line for line in lines if f"stdlib line {tag}" in line]
    loguru = [line for line in lines if f"loguru line {tag}" in line]
    assert len(stdlib) == 1 and re.search(ids + rf" stdlib line {tag}$", stdlib[0]), lines
    assert len(loguru) == 1 and re.search(ids + rf" loguru line {tag}$", loguru[0]), lines


def test_worker_runtime_env_chains_the_jobs_own_hook() -> None:
    env = kray.worker_runtime_env(runtime_env={"worker_process_setup_hook": "app.setup"})
    assert env["worker_process_setup_hook"] == kray.SETUP_HOOK
    assert env["env_vars"][kray.USER_SETUP_HOOK_ENV] == "app.setup"

    env = kray.worker_runtime_env(runtime_env={"worker_process_setup_hook": user_setup_hook})
    hook = env["worker_process_setup_hook"]
    assert isinstance(hook, functools.partial)
    assert (hook.func, hook.args) == (kray.setup_worker_then, (user_setup_hook,))

    for ours in (kray.SETUP_HOOK, kray.setup_worker, None):
        env = kray.worker_runtime_env(runtime_env={"worker_process_setup_hook": ours})
        assert env["worker_process_setup_hook"] == kray.SETUP_HOOK
        assert kray.USER_SETUP_HOOK_ENV not in env.get("env_vars", {})
    with pytest.raises(TypeError):
        kray.worker_runtime_env(runtime_env={"worker_process_setup_hook": 42})


def test_log_format_keep_leaves_the_workers_logging_alone() -> None:
    assert kray.LOG_FORMAT_ENV not in kray.worker_runtime_env().get("env_vars", {})
    env = kray.worker_runtime_env(log_format="keep")
    assert env["env_vars"][kray.LOG_FORMAT_ENV] == "keep"
    with pytest.raises(ValueError, match="log_format"):
        kray.worker_runtime_env(log_format="fancy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "request_id",
    ["请求 #1; ü", "a b,c=d", "r" * 300, "x\r\ny"],
    ids=["unicode", "sep", "300", "crlf"],
)
def test_ids_of_any_string_cross_into_the_worker_exactly(ray_cluster: Any, request_id: str) -> None:
    from .workloads import step_a

    with request_id_scope(request_id), workflow("any") as wf:
        seen = ray.get(step_a.remote(1))
    assert (seen["request_id"], seen["trace_id"]) == (request_id, wf.trace_id)
    assert seen["baggage"]["kilostar.request_id"] == request_id
