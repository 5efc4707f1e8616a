"""The seed's API keeps its names and semantics: code written against the seed runs unchanged."""

from __future__ import annotations

import asyncio
import json
import pickle
import re
import threading

import pytest

import kilostar_otel
from kilostar_otel import (
    apply_snapshot,
    bind_request_id,
    bind_trace_id,
    get_request_id,
    get_trace_id,
    new_request_id,
    request_id_scope,
    reset_request_id,
    reset_trace_id,
    snapshot,
    trace_id_scope,
)

SEED_NAMES = [
    "get_request_id",
    "get_trace_id",
    "bind_request_id",
    "bind_trace_id",
    "reset_request_id",
    "reset_trace_id",
    "request_id_scope",
    "trace_id_scope",
    "new_request_id",
    "snapshot",
    "apply_snapshot",
]


@pytest.mark.parametrize("name", SEED_NAMES)
def test_every_seed_name_is_importable_from_the_package_and_the_context_module(name: str) -> None:
    from kilostar_otel import context

    assert callable(getattr(kilostar_otel, name))
    assert getattr(context, name) is getattr(kilostar_otel, name)
    assert name in kilostar_otel.__all__


def test_unbound_ids_read_as_empty_strings() -> None:
    assert get_request_id() == ""
    assert get_trace_id() == ""


def test_new_request_id_has_the_seed_format() -> None:
    assert re.fullmatch(r"req-[0-9a-f]{32}", new_request_id())
    assert re.fullmatch(r"job-[0-9a-f]{32}", new_request_id(prefix="job"))
    assert new_request_id() != new_request_id()


def test_bind_and_reset_restore_the_previous_value() -> None:
    outer = bind_request_id("req-outer")
    inner = bind_request_id("req-inner")
    assert get_request_id() == "req-inner"
    reset_request_id(inner)
    assert get_request_id() == "req-outer"
    reset_request_id(outer)
    assert get_request_id() == ""


def test_resets_in_any_order_restore_only_their_own_id() -> None:
    # With the seed's two ContextVars this order worked; it must keep working.
    request_token = bind_request_id("req-a")
    trace_token = bind_trace_id("t-1")
    reset_request_id(request_token)
    assert get_request_id() == ""
    assert get_trace_id() == "t-1"
    reset_trace_id(trace_token)
    assert (get_request_id(), get_trace_id()) == ("", "")


def test_a_token_can_be_used_once() -> None:
    token = bind_request_id("req-once")
    reset_request_id(token)
    with pytest.raises(RuntimeError):
        reset_request_id(token)


def test_a_token_cannot_be_reset_from_another_thread() -> None:
    token = bind_request_id("req-thread")
    errors: list[BaseException] = []

    def reset_elsewhere() -> None:
        try:
            reset_request_id(token)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=reset_elsewhere)
    worker.start()
    worker.join()
    assert [type(e) for e in errors] == [ValueError]  # as the seed documents
    assert get_request_id() == "req-thread"
    reset_request_id(token)
    assert get_request_id() == ""


def test_scopes_yield_the_id_and_restore_on_exit_even_on_error() -> None:
    with request_id_scope("req-1") as rid, trace_id_scope("t-1") as tid:
        assert (rid, tid) == ("req-1", "t-1")
        assert (get_request_id(), get_trace_id()) == ("req-1", "t-1")
    assert (get_request_id(), get_trace_id()) == ("", "")
    with pytest.raises(KeyError), request_id_scope("req-2"):
        raise KeyError("boom")
    assert get_request_id() == ""


def test_seed_style_two_key_snapshot_crosses_a_process_boundary() -> None:
    # The seed's usage: the caller snapshots, the callee (a Ray actor) binds the ids again.
    with request_id_scope("req-caller"), trace_id_scope("0af7651916cd43dd8448eb211c80319c"):
        snap = snapshot()
    wire = pickle.loads(
        pickle.dumps({"request_id": snap["request_id"], "trace_id": snap["trace_id"]})
    )
    assert get_request_id() == ""
    with apply_snapshot(wire):
        assert get_request_id() == "req-caller"
        assert get_trace_id() == "0af7651916cd43dd8448eb211c80319c"
    assert (get_request_id(), get_trace_id()) == ("", "")


def test_snapshot_is_a_flat_json_and_pickle_safe_dict_of_strings() -> None:
    with request_id_scope("req-snap"), trace_id_scope("t-snap"):
        snap = snapshot()
    assert snap["request_id"] == "req-snap"
    assert snap["trace_id"] == "t-snap"
    assert all(type(k) is str and type(v) is str for k, v in snap.items())
    assert json.loads(json.dumps(snap)) == snap
    assert pickle.loads(pickle.dumps(snap)) == snap


@pytest.mark.parametrize("empty", [None, {}])
def test_apply_snapshot_accepts_none_and_empty(empty: dict[str, str] | None) -> None:
    with request_id_scope("req-keep"):
        with apply_snapshot(empty):
            assert get_request_id() == "req-keep"
        assert get_request_id() == "req-keep"


async def test_ids_do_not_leak_between_asyncio_tasks() -> None:
    async def handler(n: int) -> tuple[str, str]:
        with request_id_scope(f"req-{n}"):
            await asyncio.sleep(0)
            return (f"req-{n}", get_request_id())

    results = await asyncio.gather(*(handler(n) for n in range(50)))
    assert all(expected == seen for expected, seen in results)
    assert get_request_id() == ""


async def test_tasks_inherit_the_ids_of_the_task_that_created_them() -> None:
    with request_id_scope("req-parent"):
        child = asyncio.create_task(asyncio.sleep(0, result=None))
        seen = await asyncio.create_task(_read_ids())
        await child
    assert seen == ("req-parent", "")


async def _read_ids() -> tuple[str, str]:
    return get_request_id(), get_trace_id()
