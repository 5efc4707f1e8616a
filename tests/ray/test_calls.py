"""Calls across the Ray boundary on the real cluster: scoping, concurrency, generators, errors."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from opentelemetry import trace

from kilostar_otel import new_request_id, request_id_scope, workflow
from kilostar_otel.integrations import ray as kray
from kilostar_otel.viewer import OtlpReceiver

from .workloads import (
    ExplodingSnapshot,
    Planner,
    Streamer,
    Threaded,
    Untraced,
    count,
    count_dynamic,
    count_then_fail,
    fails,
)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def planner(ray_cluster: Any) -> Iterator[Any]:
    """One sync actor for the module: every test also checks nothing leaks between calls."""
    handle = Planner.remote()
    yield handle
    ray.kill(kray.unwrap(handle))


@pytest.fixture(scope="module")
def streamer(ray_cluster: Any) -> Iterator[Any]:
    handle = Streamer.remote()
    yield handle
    ray.kill(kray.unwrap(handle))


def _received(receiver: OtlpReceiver, span_id: str) -> Any:
    found = [s for s in receiver.spans() if s.span_id == span_id]
    assert len(found) == 1, f"span {span_id} was not received (or twice)"
    return found[0]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_every_ray_listener_is_on_loopback(ray_cluster: Any, planner: Any) -> None:
    ray.get(kray.unwrap(planner).pid.remote())  # an actor worker is up and listening too
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    ours = _descendants(os.getpid())
    listeners = []
    for line in out.splitlines():
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if pids & ours:
            listeners.append(line.split()[3].rsplit(":", 1)[0])
    assert len(listeners) >= 5  # GCS, raylet, driver and workers at least
    assert set(listeners) <= {"127.0.0.1", "[::ffff:127.0.0.1]"}, listeners
    assert ray_cluster.address_info["node_ip_address"] == "127.0.0.1"


def test_the_next_call_without_a_snapshot_sees_nothing(
    planner: Any, ray_receiver: OtlpReceiver, tracer: trace.Tracer
) -> None:
    request_id = new_request_id()
    with request_id_scope(request_id), workflow("scoped") as wf:
        first = ray.get(planner.look.remote())
    bare = ray.get(kray.unwrap(planner).look.remote())  # Ray's own handle: no snapshot
    with tracer.start_as_current_span("no ids here"):
        unbound = ray.get(planner.look.remote())  # a snapshot, but with nothing bound

    assert first["pid"] == bare["pid"] == unbound["pid"]  # the same actor process
    assert (first["request_id"], first["trace_id"]) == (request_id, wf.trace_id)
    for later in (bare, unbound):
        assert later["request_id"] == ""
        assert later["trace_id"] == ""
        assert later["baggage"] == {}
        assert later["otel_trace_id"] != wf.trace_id
    assert bare["parent_span_id"] == ""  # a new root: no leftover OTel context
    bare_span = _received(ray_receiver, bare["span_id"])
    assert bare_span.is_root
    assert "kilostar.request_id" not in bare_span.attributes
    assert "kilostar.trace_id" not in bare_span.attributes


def test_threaded_actor_calls_each_keep_their_own_ids(ray_cluster: Any) -> None:
    actor = Threaded.remote()
    try:
        refs = []
        for i in range(4):
            with request_id_scope(f"req-thread-{i}"):
                refs.append(actor.together.remote())
        results = ray.get(refs)
    finally:
        ray.kill(kray.unwrap(actor))
    for i, result in enumerate(results):
        assert result["before"]["request_id"] == f"req-thread-{i}"
        assert result["after"]["request_id"] == f"req-thread-{i}"
        assert result["after"]["span_id"] == result["before"]["span_id"]


def test_async_actor_calls_each_keep_their_own_ids(streamer: Any) -> None:
    refs = []
    for i in range(4):
        with request_id_scope(f"req-async-{i}"), workflow(f"async-{i}") as wf:
            refs.append((wf.trace_id, streamer.together.remote(4)))
    for i, (trace_id, ref) in enumerate(refs):
        result = ray.get(ref)
        for seen in (result["before"], result["after"]):
            assert seen["request_id"] == f"req-async-{i}"
            assert seen["trace_id"] == trace_id
            assert seen["otel_trace_id"] == trace_id
    after = ray.get(kray.unwrap(streamer).look.remote())
    assert (after["request_id"], after["trace_id"], after["baggage"]) == ("", "", {})


def test_generator_and_async_generator_methods(
    planner: Any, streamer: Any, ray_receiver: OtlpReceiver
) -> None:
    request_id = new_request_id()
    with request_id_scope(request_id), workflow("stream") as wf:
        root_id = format(wf.span.get_span_context().span_id, "016x")
        steps = [ray.get(ref) for ref in planner.steps.remote(3)]
        streamed = [ray.get(ref) for ref in streamer.stream.remote(3)]
    assert [s["tag"] for s in steps] == ["steps-0", "steps-1", "steps-2"]
    assert [s["tag"] for s in streamed] == ["stream-0", "stream-1", "stream-2"]
    for items, name in (
        (steps, "ray.actor Planner.steps"),
        (streamed, "ray.actor Streamer.stream"),
    ):
        assert {(s["request_id"], s["trace_id"]) for s in items} == {(request_id, wf.trace_id)}
        assert {s["parent_span_id"] for s in items} == {root_id}
        assert len({s["span_id"] for s in items}) == 1  # one span for the whole call
        span = _received(ray_receiver, items[0]["span_id"])  # ended and flushed already
        assert span.name == name
        assert span.trace_id == wf.trace_id
        assert span.parent_span_id == root_id
        assert span.attributes["kilostar.request_id"] == request_id


def test_generator_tasks_streaming_and_dynamic(
    ray_cluster: Any, ray_receiver: OtlpReceiver
) -> None:
    request_id = new_request_id()
    with request_id_scope(request_id), workflow("generator tasks") as wf:
        root_id = format(wf.span.get_span_context().span_id, "016x")
        streamed = [ray.get(ref) for ref in count.remote(3)]
        dynamic = [ray.get(ref) for ref in ray.get(count_dynamic.remote(2))]
    assert [s["tag"] for s in streamed] == ["count-0", "count-1", "count-2"]
    assert [s["tag"] for s in dynamic] == ["dynamic-0", "dynamic-1"]
    for items, name in ((streamed, "ray.task count"), (dynamic, "ray.task count_dynamic")):
        assert {(s["request_id"], s["trace_id"]) for s in items} == {(request_id, wf.trace_id)}
        assert {s["parent_span_id"] for s in items} == {root_id}
        assert len({s["span_id"] for s in items}) == 1  # one span for the whole call
        span = _received(ray_receiver, items[0]["span_id"])
        assert (span.name, span.trace_id, span.status_code) == (name, wf.trace_id, "UNSET")


def test_a_generator_task_that_fails_mid_stream_records_it(
    ray_cluster: Any, ray_receiver: OtlpReceiver
) -> None:
    with request_id_scope(new_request_id()), workflow("failing generator") as wf:
        stream = count_then_fail.remote(2)
        first = [ray.get(next(stream)) for _ in range(2)]
        with pytest.raises(ray.exceptions.RayTaskError) as raised:
            ray.get(next(stream))
    assert isinstance(raised.value, ValueError)
    assert [s["tag"] for s in first] == ["before-failure-0", "before-failure-1"]
    span = _received(ray_receiver, first[0]["span_id"])
    assert span.name == "ray.task count_then_fail"
    assert span.trace_id == wf.trace_id
    assert span.status_code == "ERROR"
    assert span.status_message.startswith("ValueError")


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda planner, streamer: fails.remote(), ValueError, "ray.task fails"),
        (lambda planner, streamer: planner.boom.remote(), ValueError, "ray.actor Planner.boom"),
        (lambda planner, streamer: streamer.boom.remote(), KeyError, "ray.actor Streamer.boom"),
    ],
)
def test_callee_exceptions_are_recorded_and_raised(
    planner: Any,
    streamer: Any,
    ray_receiver: OtlpReceiver,
    call: Any,
    error: type[Exception],
    name: str,
) -> None:
    with request_id_scope(new_request_id()), workflow("failing") as wf:
        ref = call(planner, streamer)
        with pytest.raises(ray.exceptions.RayTaskError) as raised:
            ray.get(ref)
    assert isinstance(raised.value, error)  # Ray's exception, still the callee's type
    failed = [s for s in ray_receiver.spans() if s.trace_id == wf.trace_id]
    assert [s.name for s in failed] == [name]
    span = failed[0]
    assert span.status_code == "ERROR"
    assert span.status_message.startswith(error.__name__)
    events = [attrs for event, attrs in span.events if event == "exception"]
    assert len(events) == 1
    assert events[0]["exception.type"] == error.__name__


_VALID_TRACE = "0af7651916cd43dd8448eb211c80319c"
_HUGE = 1_000_000


@pytest.mark.parametrize(
    ("snap", "request_id", "trace_id"),
    [
        (12345, "", ""),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "", ""),
        (["request_id", "req-1"], "", ""),
        # Ids are whatever the caller bound, as in the seed: non-str ones as str, any string as is.
        (
            {"request_id": 5, "trace_id": ["x"], "traceparent": b"\x00", "baggage": {"a": 1}},
            "5",
            "['x']",
        ),
        (
            {
                "request_id": "req-ok",
                "trace_id": "t" * 10_000,
                "traceparent": "00-" + "f" * _HUGE,
                "tracestate": "k=" + "v" * _HUGE,
                "baggage": "k=" + "v" * _HUGE,
            },
            "req-ok",
            "t" * 10_000,
        ),
        (
            {
                "request_id": "req-fine",
                "trace_id": _VALID_TRACE,
                "traceparent": "00-00000000000000000000000000000000-0000000000000000-01",
            },
            "req-fine",
            _VALID_TRACE,
        ),
        (
            {"request_id": "req\r\nX-Evil: 1", "trace_id": "a b", "traceparent": "garbage"},
            "req\r\nX-Evil: 1",  # kept exactly; it is never written to a header (see security)
            "a b",
        ),
        (ExplodingSnapshot(request_id="req-x"), "", ""),
        (None, "", ""),
    ],
    ids=[
        "int",
        "bare-string",
        "list",
        "wrong-types",
        "huge-values",
        "zero-traceparent",
        "any-string-ids",
        "raising-mapping",
        "none",
    ],
)
def test_hostile_snapshots_are_taken_field_by_field(
    planner: Any, ray_receiver: OtlpReceiver, snap: Any, request_id: str, trace_id: str
) -> None:
    raw = kray.unwrap(planner)
    seen = ray.get(raw.look.remote(_kilostar_ctx=snap))  # the call runs
    assert seen["request_id"] == request_id
    assert seen["trace_id"] == trace_id
    assert seen["parent_span_id"] == ""  # no usable traceparent: the call starts its own trace
    assert seen["baggage"] == ({"kilostar.request_id": request_id} if request_id else {})
    span = _received(ray_receiver, seen["span_id"])
    assert span.attributes.get("kilostar.request_id", "") == request_id
    assert span.attributes.get("kilostar.trace_id", "") == trace_id
    assert span.status_code == "UNSET"


def test_spans_are_exported_before_the_actor_is_killed(
    ray_cluster: Any, ray_receiver: OtlpReceiver
) -> None:
    actor = Planner.remote()
    with request_id_scope(new_request_id()), workflow("killed") as wf:
        seen = ray.get(actor.look.remote())
    ray.kill(kray.unwrap(actor), no_restart=True)  # SIGKILL-like: no atexit, no shutdown
    span = _received(ray_receiver, seen["span_id"])
    assert span.trace_id == wf.trace_id


def test_a_worker_without_tracing_warns_once_and_still_binds_ids(ray_cluster: Any) -> None:
    # Switch the job's setup hook off for this actor's worker: tracing is never set up there.
    actor = Untraced.options(
        runtime_env={"env_vars": {"__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR": ""}}
    ).remote()
    try:
        with request_id_scope("req-untraced"):
            results = ray.get([actor.look.remote() for _ in range(3)])
        warnings = ray.get(kray.unwrap(actor).warnings.remote())
    finally:
        ray.kill(kray.unwrap(actor))
    assert [r["tracing"] for r in results] == [False, False, False]
    assert [r["request_id"] for r in results] == ["req-untraced"] * 3
    assert len(warnings) == 1
    assert kray.SETUP_HOOK in warnings[0]
    assert "tracing was never set up" in warnings[0]
    assert "req-untraced" not in warnings[0]  # nothing from the snapshot is echoed
