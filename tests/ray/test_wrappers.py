"""The callee wrappers, run in this process (no cluster): scoping, spans, signatures, setup."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import ray
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from ray._common.signature import extract_signature, flatten_args
from ray._common.utils import load_class
from ray.util.tracing.tracing_helper import _import_from_string

from kilostar_otel import get_request_id, request_id_scope, snapshot, trace_id_scope
from kilostar_otel._idcontext import request_id_from, trace_id_from
from kilostar_otel.ids import is_valid_request_id
from kilostar_otel.integrations import ray as kray
from kilostar_otel.integrations.ray._callee import call_context, traced_callee, traced_class
from kilostar_otel.integrations.ray._flush import Flusher

from .workloads import seen

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
_SNAPSHOT_KEYS = ("request_id", "trace_id", "traceparent", "tracestate", "baggage")

pytestmark = pytest.mark.ray


def look(tag: str = "") -> dict[str, Any]:
    return seen(tag)


async def look_async() -> dict[str, Any]:
    return seen("async")


def look_many(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield seen(f"gen-{i}")


async def look_many_async(n: int) -> AsyncIterator[dict[str, Any]]:
    for i in range(n):
        yield seen(f"agen-{i}")


def fail() -> None:
    raise ValueError("callee failed")


@pytest.fixture
def caller(tracer: trace.Tracer) -> tuple[dict[str, str], str]:
    """A snapshot taken inside a caller span with both ids bound, and that span's id."""
    with (
        tracer.start_as_current_span("caller") as span,
        request_id_scope("req-caller"),
        trace_id_scope(TRACE),
    ):
        snap = snapshot()
    return snap, format(span.get_span_context().span_id, "016x")


def test_a_call_sees_its_snapshot_and_nothing_else(caller: Any, spans: Any) -> None:
    snap, caller_span = caller
    wrapped = traced_callee(look)
    with request_id_scope("req-worker-leftover"):
        got = wrapped("x", _kilostar_ctx=snap)
        bare = wrapped("y")
        assert get_request_id() == "req-worker-leftover"  # the surrounding context is untouched
    assert (got["request_id"], got["trace_id"]) == ("req-caller", TRACE)
    assert got["parent_span_id"] == caller_span
    assert (bare["request_id"], bare["trace_id"], bare["baggage"]) == ("", "", {})
    assert bare["parent_span_id"] == ""
    names = [s.name for s in spans.all()]
    assert names.count("ray.task look") == 2
    traced = next(s for s in spans.all() if format(s.context.span_id, "016x") == got["span_id"])
    assert traced.kind == trace.SpanKind.CONSUMER
    assert traced.attributes["kilostar.request_id"] == "req-caller"
    assert traced.attributes["kilostar.trace_id"] == TRACE
    assert traced.attributes["ray.function"] == "look"


async def test_a_coroutine_call_sees_its_snapshot(caller: Any) -> None:
    snap, caller_span = caller
    got = await traced_callee(look_async)(_kilostar_ctx=snap)
    assert (got["request_id"], got["trace_id"], got["parent_span_id"]) == (
        "req-caller",
        TRACE,
        caller_span,
    )
    assert get_request_id() == ""


def test_a_generator_call_applies_its_snapshot_only_while_it_runs(caller: Any, spans: Any) -> None:
    snap, caller_span = caller
    gen = traced_callee(look_many)(3, _kilostar_ctx=snap)
    first = next(gen)
    assert get_request_id() == ""  # between items the consumer's context is its own
    second = next(gen)
    gen.close()  # an early stop still ends the span
    assert first["request_id"] == second["request_id"] == "req-caller"
    assert first["span_id"] == second["span_id"]
    assert first["parent_span_id"] == caller_span
    assert [s.name for s in spans.all() if s.name != "caller"] == ["ray.task look_many"]


async def test_an_async_generator_call_applies_its_snapshot(caller: Any, spans: Any) -> None:
    snap, _ = caller
    items = [item async for item in traced_callee(look_many_async)(2, _kilostar_ctx=snap)]
    assert [(i["tag"], i["request_id"]) for i in items] == [
        ("agen-0", "req-caller"),
        ("agen-1", "req-caller"),
    ]
    assert [s.name for s in spans.all() if s.name != "caller"] == ["ray.task look_many_async"]


def test_an_exception_is_recorded_and_raised(caller: Any, spans: Any) -> None:
    snap, _ = caller
    with pytest.raises(ValueError, match="callee failed"):
        traced_callee(fail)(_kilostar_ctx=snap)
    span = spans.named("ray.task fail")
    assert span.status.status_code == trace.StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert get_request_id() == ""


def test_signatures_let_ray_check_the_call_with_the_snapshot_keyword() -> None:
    for fn, extra in (
        (look, ["_kilostar_ctx"]),
        (look_async, ["_kilostar_ctx"]),
        (look_many, ["_kilostar_ctx", "_ray_trace_ctx"]),
        (look_many_async, ["_kilostar_ctx", "_ray_trace_ctx"]),
    ):
        wrapped = traced_callee(fn)
        params = list(inspect.signature(wrapped).parameters.values())
        original = list(inspect.signature(fn).parameters)
        assert [p.name for p in params] == original + extra
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[len(original) :])
        assert inspect.unwrap(wrapped) is wrapped  # Ray reads this signature, not fn's
        assert inspect.isasyncgenfunction(wrapped) == inspect.isasyncgenfunction(fn)
        assert inspect.isgeneratorfunction(wrapped) == inspect.isgeneratorfunction(fn)
        assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(fn)
    signature = extract_signature(traced_callee(look))
    flatten_args(signature, ["tag"], {"_kilostar_ctx": {"request_id": "r"}})
    with pytest.raises(TypeError):
        flatten_args(signature, ["tag", "extra"], {})  # Ray still rejects a wrong call


def test_classes_get_traced_public_methods_and_keep_ray_options() -> None:
    class Base:
        def inherited(self) -> str:
            return "base"

    class Actor(Base):
        def __init__(self) -> None:
            self.ready = True

        @ray.method(num_returns=2)
        def pair(self) -> tuple[int, int]:
            return 1, 2

        @staticmethod
        def helper() -> int:
            return 3

        @classmethod
        def make(cls) -> str:
            return cls.__name__

    traced = traced_class(Actor)
    assert issubclass(traced, Actor)
    assert traced.__name__ == "Actor"
    assert traced.__qualname__ == Actor.__qualname__
    assert "_kilostar_ctx" in inspect.signature(traced.pair).parameters
    assert "_kilostar_ctx" in inspect.signature(traced.inherited).parameters
    assert traced.pair.__ray_num_returns__ == 2  # type: ignore[attr-defined]
    assert traced.__init__ is Actor.__init__
    assert traced.helper() == 3
    assert traced.make() == "Actor"
    assert traced().pair(_kilostar_ctx=None) == (1, 2)


_field = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=300),
    st.binary(max_size=50),
    st.lists(st.text(max_size=5), max_size=3),
    st.sampled_from(
        [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "req-ok",
            TRACE,
            "kilostar.request_id=req-bag",
            "a" * 201,
        ]
    ),
)
_snapshots = st.one_of(
    _field,
    st.fixed_dictionaries(
        {},
        optional={
            key: _field
            for key in ("request_id", "trace_id", "traceparent", "tracestate", "baggage")
        },
    ),
    st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), _field, max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(snap=_snapshots, carrier=st.one_of(st.none(), st.dictionaries(st.text(), _field)))
def test_any_snapshot_gives_a_context_with_only_its_own_ids(snap: Any, carrier: Any) -> None:
    ctx, nested = call_context(snap, carrier)
    fields = snap if isinstance(snap, dict) else {}
    request_id = request_id_from(ctx)
    # The snapshot's id exactly (as str), a valid baggage entry of the snapshot, or nothing.
    assert request_id in ("", str(fields.get("request_id"))) or is_valid_request_id(request_id)
    assert trace_id_from(ctx) in ("", str(fields.get("trace_id")))
    assert nested is False  # Ray's tracing is off in this process


def test_repeated_snapshots_give_each_call_exactly_its_own_ids() -> None:
    # The callee keeps the contexts of recent snapshots: equal content, equal context; values
    # that are equal but not the same string (1, True, "1") each keep their own meaning.
    for value, expected in ((1, "1"), (True, "True"), ("1", "1"), (1, "1"), ("True", "True")):
        ctx, _ = call_context({"request_id": value, "trace_id": TRACE}, None)
        assert (request_id_from(ctx), trace_id_from(ctx)) == (expected, TRACE)
    # More distinct snapshots than the callee keeps, then the first ones again.
    for round_ in range(2):
        for n in range(600):
            ctx, _ = call_context({"request_id": f"req-{n}", "trace_id": ""}, None)
            assert (request_id_from(ctx), trace_id_from(ctx)) == (f"req-{n}", ""), round_


def test_worker_runtime_env_and_hooks_resolve_to_setup_worker() -> None:
    env = kray.worker_runtime_env(
        endpoint="http://127.0.0.1:4317",
        protocol="grpc",
        service_name="workers",
        flush_timeout=2,
        runtime_env={"env_vars": {"KEEP": "1"}, "pip": ["x"]},
    )
    assert env == {
        "pip": ["x"],
        "env_vars": {
            "KEEP": "1",
            kray.ENDPOINT_ENV: "http://127.0.0.1:4317",
            kray.PROTOCOL_ENV: "grpc",
            kray.SERVICE_NAME_ENV: "workers",
            kray.FLUSH_TIMEOUT_ENV: "2.0",
        },
        "worker_process_setup_hook": kray.SETUP_HOOK,
    }
    assert kray.role_runtime_env("planner") == {"env_vars": {kray.SERVICE_NAME_ENV: "planner"}}
    assert load_class(kray.SETUP_HOOK) is kray.setup_worker  # how Ray loads the setup hook
    assert _import_from_string(kray.RAY_TRACING_STARTUP_HOOK) is kray.setup_worker


def test_setup_worker_leaves_a_driver_alone(provider: Any) -> None:
    kray.setup_worker()
    assert trace.get_tracer_provider() is provider


def test_the_flusher_never_waits_longer_than_its_timeout() -> None:
    release = threading.Event()
    calls: list[int] = []

    def export() -> None:
        calls.append(1)
        release.wait(30)

    flusher = Flusher(export)
    assert flusher.flush(0.2) is False  # the exporter hangs: the call gives up
    assert flusher.flush(0.05) is False  # still hanging: no second export queued behind it
    assert calls == [1]
    release.set()
    assert flusher.flush(10) is True
    assert calls == [1, 1]


def test_start_local_cluster_refuses_after_ray_was_imported_for_all_interfaces(
    tmp_path: Any,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    code = (
        "import ray\n"
        "from kilostar_otel.integrations.ray import start_local_cluster\n"
        "try:\n"
        f"    start_local_cluster({str(tmp_path)!r})\n"
        "except RuntimeError as exc:\n"
        "    print('refused:', exc)\n"
        "print('initialized:', ray.is_initialized())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "refused: ray was imported before start_local_cluster()" in result.stdout
    assert "initialized: False" in result.stdout


def test_a_traced_call_outside_ray_never_starts_ray() -> None:
    code = (
        "import ray\n"
        "from kilostar_otel.integrations.ray._callee import traced_callee\n"
        "print(traced_callee(lambda: 7)(_kilostar_ctx={'request_id': 'req-1'}))\n"
        "print('initialized:', ray.is_initialized())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", "initialized:", "False"]
