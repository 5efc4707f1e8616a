"""The request id and the OTel baggage entry are one truth; snapshots carry the OTel context."""

from __future__ import annotations

import json
import pickle

import pytest
from opentelemetry import baggage, context, trace

from kilostar_otel import (
    apply_snapshot,
    get_request_id,
    get_trace_id,
    request_id_scope,
    snapshot,
    workflow,
)
from tests.conftest import Spans


def test_a_bound_request_id_is_the_baggage_entry() -> None:
    with request_id_scope("req-truth"):
        assert baggage.get_baggage("kilostar.request_id") == "req-truth"
    assert baggage.get_baggage("kilostar.request_id") is None


def test_binding_keeps_other_baggage_entries() -> None:
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with request_id_scope("req-1"):
            assert dict(baggage.get_all()) == {"tenant": "acme", "kilostar.request_id": "req-1"}
        assert dict(baggage.get_all()) == {"tenant": "acme"}
    finally:
        context.detach(token)


def test_a_valid_baggage_entry_from_elsewhere_is_the_request_id() -> None:
    token = context.attach(baggage.set_baggage("kilostar.request_id", "req-from-upstream"))
    try:
        assert get_request_id() == "req-from-upstream"
    finally:
        context.detach(token)


@pytest.mark.parametrize("bad", ["req 1", "x" * 500, "a\r\nb", "", "réq"])
def test_an_invalid_baggage_entry_is_not_a_request_id(bad: str) -> None:
    token = context.attach(baggage.set_baggage("kilostar.request_id", bad))
    try:
        assert get_request_id() == ""
    finally:
        context.detach(token)


def test_snapshot_carries_the_w3c_context(tracer: trace.Tracer) -> None:
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with request_id_scope("req-w3c"), tracer.start_as_current_span("request") as span:
            snap = snapshot()
            span_context = span.get_span_context()
    finally:
        context.detach(token)
    assert snap["traceparent"] == (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )
    assert set(snap["baggage"].split(",")) == {"tenant=acme", "kilostar.request_id=req-w3c"}
    assert "tracestate" not in snap
    assert json.loads(json.dumps(snap)) == pickle.loads(pickle.dumps(snap)) == snap


def test_apply_snapshot_makes_spans_children_of_the_remote_span(
    tracer: trace.Tracer, spans: Spans
) -> None:
    with request_id_scope("req-parent"), tracer.start_as_current_span("caller"):
        snap = snapshot()
    with apply_snapshot(snap):
        assert get_request_id() == "req-parent"
        assert baggage.get_baggage("kilostar.request_id") == "req-parent"
        with tracer.start_as_current_span("callee"):
            pass
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert get_request_id() == ""
    caller, callee = spans.named("caller"), spans.named("callee")
    assert callee.context.trace_id == caller.context.trace_id
    assert callee.parent is not None
    assert callee.parent.span_id == caller.context.span_id
    assert callee.attributes["kilostar.request_id"] == "req-parent"


def test_tracestate_and_baggage_round_trip_through_a_snapshot(tracer: trace.Tracer) -> None:
    snap = {
        "request_id": "req-ts",
        "trace_id": "",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=abc,tenant@sys=x",
        "baggage": "tenant=acme,kilostar.request_id=req-other",
    }
    with apply_snapshot(snap):
        again = snapshot()
        assert dict(baggage.get_all()) == {"tenant": "acme", "kilostar.request_id": "req-ts"}
    assert again["traceparent"] == snap["traceparent"]
    assert again["tracestate"] == "vendor=abc,tenant@sys=x"
    assert again["request_id"] == "req-ts"


def test_continuing_a_workflow_from_a_snapshot_adds_children_not_a_new_root(
    tracer: trace.Tracer, spans: Spans
) -> None:
    with request_id_scope("req-wf"), workflow("plan") as wf:
        snap = snapshot()
    with apply_snapshot(snap), tracer.start_as_current_span("remote step"):
        assert get_trace_id() == wf.trace_id
    root, step = spans.named("invoke_workflow plan"), spans.named("remote step")
    assert f"{step.context.trace_id:032x}" == wf.trace_id
    assert step.parent is not None
    assert step.parent.span_id == root.context.span_id
    assert step.attributes["kilostar.trace_id"] == wf.trace_id
    assert step.attributes["kilostar.request_id"] == "req-wf"
    assert [s.name for s in spans.all() if s.parent is None] == ["invoke_workflow plan"]


BAD_SNAPSHOTS: list[object] = [
    "req-1",
    ["request_id", "req-1"],
    42,
    {"request_id": None, "trace_id": "", "traceparent": b"00-..."},
    {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
    {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"traceparent": "garbage", "tracestate": "=,=,,", "baggage": ";;;==,,,%zz"},
    {"baggage": "k=" + "v" * 100_000},
    {"tracestate": "a=b"},
    {None: "x", 3: 4},
]


@pytest.mark.parametrize("snap", BAD_SNAPSHOTS)
def test_malformed_snapshots_are_ignored_never_raised(snap: object, tracer: trace.Tracer) -> None:
    with request_id_scope("req-host"), tracer.start_as_current_span("host") as host:
        with apply_snapshot(snap):  # type: ignore[arg-type]
            assert get_request_id() == "req-host"
            assert trace.get_current_span() is host
        assert get_request_id() == "req-host"


def test_malformed_fields_are_dropped_one_by_one() -> None:
    snap = {"request_id": "req-good", "trace_id": "t\r\nx", "traceparent": "nope", "baggage": 7}
    with apply_snapshot(snap):  # type: ignore[arg-type]
        assert get_request_id() == "req-good"
        assert get_trace_id() == "t\r\nx"  # the ids were bound by the caller: kept exactly
        assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.parametrize(
    ("snap", "ids"),
    [
        ({"request_id": "bad id\r\n", "trace_id": "y" * 10_000}, ("bad id\r\n", "y" * 10_000)),
        ({"request_id": 42, "trace_id": ["x"], "traceparent": b"00-..."}, ("42", "['x']")),
    ],
)
def test_snapshot_ids_of_any_string_are_applied_exactly(
    snap: dict[str, object], ids: tuple[str, str]
) -> None:
    # As in the seed, a snapshot's ids are whatever the caller bound (non-str ones as str).
    with request_id_scope("req-host"):
        with apply_snapshot(snap):  # type: ignore[arg-type]
            assert (get_request_id(), get_trace_id()) == ids
            assert baggage.get_baggage("kilostar.request_id") == ids[0]
        assert (get_request_id(), get_trace_id()) == ("req-host", "")


def test_a_mapping_that_raises_is_ignored() -> None:
    class Hostile(dict[str, str]):
        def get(self, key: object, default: object = None) -> str:  # type: ignore[override]
            raise RuntimeError("hostile")

    with apply_snapshot(Hostile(request_id="x")):
        assert get_request_id() == ""
