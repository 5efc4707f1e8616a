"""The terminal tree: request traces with their workflow traces nested under the starting span.

Spans are real: made by the SDK with KiloStarSpanProcessor and workflow(), exported over OTLP/gRPC
to the embedded receiver, and grouped from what arrived.
"""

from __future__ import annotations

import io
import random
import re
import threading
from dataclasses import replace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from kilostar_otel import request_id_scope, workflow
from kilostar_otel.viewer import OtlpReceiver, ReceivedSpan
from kilostar_otel.viewer.tree import (
    TraceGroup,
    TraceGrouper,
    build_groups,
    format_duration,
    make_console,
    render_groups,
    render_text,
)

GUIDE = re.compile(r"^((?:│   |├── |└── |    )*)(.*)$")


def outline(text: str) -> list[tuple[int, str]]:
    """Tree text -> (depth, label) per line; depth 0 is the group header."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = GUIDE.match(line)
        assert match is not None
        rows.append((len(match.group(1)) // 4, match.group(2)))
    return rows


def request_with_workflow(provider: TracerProvider, request_id: str) -> str:
    """client -> server -> handler -> workflow("plan") with two steps; returns the trace_id."""
    tracer = provider.get_tracer("tree-test")
    with request_id_scope(request_id):
        with tracer.start_as_current_span("POST /plan", kind=SpanKind.CLIENT) as client:
            client.set_attribute("http.response.status_code", 200)
            with tracer.start_as_current_span("POST /plan", kind=SpanKind.SERVER):
                with tracer.start_as_current_span("handler"):
                    with workflow("plan", tracer_provider=provider) as wf:
                        trace_id = wf.trace_id
                        with tracer.start_as_current_span("step fetch"):
                            pass
                        with tracer.start_as_current_span("step rank"):
                            pass
    return trace_id


def test_a_workflow_is_drawn_under_the_span_that_started_it(
    otlp_provider: TracerProvider, receiver: OtlpReceiver
) -> None:
    trace_id = request_with_workflow(otlp_provider, "req-tree-1")
    spans = receiver.wait_for_spans(6)
    client = next(s for s in spans if s.kind == "CLIENT")

    rows = outline(render_text(spans))

    assert [(depth, label.split("  ")[0]) for depth, label in rows] == [
        (0, "request req-tree-1"),
        (1, "POST /plan"),
        (2, "POST /plan"),
        (3, "handler"),
        (4, "invoke_workflow plan"),
        (5, "step fetch"),
        (5, "step rank"),
    ]
    # Every line below the header starts with the span's own name, as Jaeger shows it.
    assert {label.split("  ")[0] for _, label in rows[1:]} == {s.name for s in spans}
    header = rows[0][1]
    assert "200 ok" in header
    assert format_duration(client.end_time_unix_nano - client.start_time_unix_nano) in header
    assert f"trace={client.trace_id}" in header
    assert "6 spans" in header
    assert "client" in rows[1][1]
    assert "server" in rows[2][1]
    assert f"trace_id={trace_id}" in rows[4][1]


def test_the_tree_does_not_depend_on_the_order_spans_arrive_in(
    otlp_provider: TracerProvider, receiver: OtlpReceiver
) -> None:
    request_with_workflow(otlp_provider, "req-order")
    spans = receiver.wait_for_spans(6)
    expected = render_text(spans)
    shuffled = list(spans)
    random.Random(7).shuffle(shuffled)
    assert render_text(list(reversed(spans))) == expected
    assert render_text(shuffled) == expected
    assert render_text(spans + spans) == expected  # a span delivered twice is drawn once


def test_each_workflow_is_nested_in_its_own_request_when_requests_overlap(
    otlp_provider: TracerProvider, receiver: OtlpReceiver
) -> None:
    barrier = threading.Barrier(2)
    tracer = otlp_provider.get_tracer("tree-test")
    started: dict[str, str] = {}

    def request(request_id: str) -> None:
        with request_id_scope(request_id), tracer.start_as_current_span(f"GET /{request_id}"):
            barrier.wait(timeout=10)  # both requests are open before either starts its workflow
            with workflow("plan", tracer_provider=otlp_provider) as wf:
                started[request_id] = wf.trace_id
                barrier.wait(timeout=10)  # both workflows are open at once

    threads = [threading.Thread(target=request, args=(rid,)) for rid in ("req-a", "req-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    groups = build_groups(receiver.wait_for_spans(4))

    assert {g.request_id: [v.trace_id for v in g.traces[1:]] for g in groups} == {
        "req-a": [started["req-a"]],
        "req-b": [started["req-b"]],
    }
    assert all(g.missing == () for g in groups)


def test_a_workflow_started_inside_a_workflow_nests_twice(
    otlp_provider: TracerProvider, receiver: OtlpReceiver
) -> None:
    tracer = otlp_provider.get_tracer("tree-test")
    with request_id_scope("req-nested"), tracer.start_as_current_span("GET /nested"):
        with workflow("outer", tracer_provider=otlp_provider) as outer:
            outer_id = outer.trace_id
            with tracer.start_as_current_span("step"):
                with workflow("inner", tracer_provider=otlp_provider) as inner:
                    inner_id = inner.trace_id

    rows = outline(render_text(receiver.wait_for_spans(4)))

    assert [depth for depth, _ in rows] == [0, 1, 2, 3, 4]
    assert rows[2][1].startswith(f"invoke_workflow outer  trace_id={outer_id}")
    assert rows[3][1].startswith("step")
    assert rows[4][1].startswith(f"invoke_workflow inner  trace_id={inner_id}")


def test_a_workflow_started_outside_any_request_is_a_group_of_its_own(
    otlp_provider: TracerProvider, receiver: OtlpReceiver
) -> None:
    tracer = otlp_provider.get_tracer("tree-test")
    with workflow("nightly", tracer_provider=otlp_provider) as wf:
        trace_id = wf.trace_id
        with tracer.start_as_current_span("step"):
            pass

    (group,) = build_groups(receiver.wait_for_spans(2))

    assert group.top.is_workflow and group.top.trace_id == trace_id
    assert group.missing == ()
    rows = outline(render_text(receiver.spans()))
    assert rows[0][1].startswith(f"workflow nightly  trace_id={trace_id}")
    assert [(d, label.split("  ")[0]) for d, label in rows[1:]] == [(1, "step")]


def test_the_request_id_comes_from_the_server_when_the_client_sent_none(
    otlp_provider: TracerProvider, receiver: OtlpReceiver
) -> None:
    tracer = otlp_provider.get_tracer("tree-test")
    with tracer.start_as_current_span("GET /hello", kind=SpanKind.CLIENT):
        with request_id_scope("req-made-by-server"):
            with tracer.start_as_current_span("GET /hello", kind=SpanKind.SERVER):
                pass

    (group,) = build_groups(receiver.wait_for_spans(2))

    assert "kilostar.request_id" not in group.top.roots[0].attributes
    assert group.request_id == "req-made-by-server"


def test_errors_show_their_status_and_message(
    otlp_provider: TracerProvider, receiver: OtlpReceiver
) -> None:
    tracer = otlp_provider.get_tracer("tree-test")
    with request_id_scope("req-fail"), tracer.start_as_current_span("GET /fail") as span:
        span.set_attribute("http.response.status_code", 500)
        span.set_status(Status(StatusCode.ERROR, "RuntimeError: the step failed"))

    rows = outline(render_text(receiver.wait_for_spans(1)))

    assert "500 ERROR (RuntimeError: the step failed)" in rows[0][1]
    assert "ERROR (RuntimeError: the step failed)" in rows[1][1]


def test_names_and_messages_from_the_wire_cannot_break_the_output(
    otlp_provider: TracerProvider, receiver: OtlpReceiver
) -> None:
    tracer = otlp_provider.get_tracer("tree-test")
    hostile = "evil\x1b[2J\nforged line\r[bold]x[/bold]" + "A" * 500
    with request_id_scope("req-hostile"), tracer.start_as_current_span(hostile) as span:
        span.set_status(Status(StatusCode.ERROR, "\x1b]0;title\x07" + "B" * 500))

    text = render_text(receiver.wait_for_spans(1), width=1000)  # no wrapping: count lines

    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert len(text.splitlines()) == 2  # header and span: nothing forged a line
    assert "[bold]x[/bold]" in text  # shown literally, not interpreted as markup
    assert "A" * 200 not in text and "B" * 200 not in text  # bounded


# -- malformed input, built directly: the renderer must still show every span ------------------


def span(
    trace_id: str, span_id: str, parent: str = "", name: str = "", **extra: object
) -> ReceivedSpan:
    fields: dict[str, object] = {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name or span_id,
        "kind": "INTERNAL",
        "start_time_unix_nano": 1_000 + int(span_id, 16),
        "end_time_unix_nano": 2_000_000,
        "status_code": "UNSET",
        "status_message": "",
        "attributes": {},
        "resource": {},
        "links": (),
        "events": (),
        "scope_name": "s",
        "transport": "grpc",
    }
    fields.update(extra)
    return ReceivedSpan(**fields)  # type: ignore[arg-type]


def test_parent_cycles_and_self_parents_still_show_every_span() -> None:
    t = "1" * 32
    spans = [
        span(t, "a" * 16, parent="b" * 16, name="loop-a"),
        span(t, "b" * 16, parent="a" * 16, name="loop-b"),
        span(t, "c" * 16, parent="c" * 16, name="self"),
        span(t, "d" * 16, parent="e" * 16, name="orphan"),
    ]
    drawn = sorted(label.split("  ")[0] for _, label in outline(render_text(spans))[1:])
    assert drawn == ["loop-a", "loop-b", "orphan", "self"]


def test_workflows_linking_to_each_other_do_not_loop() -> None:
    t1, t2 = "1" * 32, "2" * 32
    wf = {"kilostar.workflow.name": "w"}
    spans = [
        span(t1, "a" * 16, attributes=wf, links=((t2, "b" * 16),)),
        span(t2, "b" * 16, attributes=wf, links=((t1, "a" * 16),)),
    ]
    groups = build_groups(spans)
    assert sum(len(g.traces) for g in groups) == 2
    assert render_text(spans).count("workflow w") == 2


# -- TraceGrouper: grouping as spans arrive ------------------------------------------------------


def split(
    spans: list[ReceivedSpan], trace_id: str
) -> tuple[list[ReceivedSpan], list[ReceivedSpan]]:
    """(spans of the other traces, spans of ``trace_id``)."""
    others = [s for s in spans if s.trace_id != trace_id]
    return others, [s for s in spans if s.trace_id == trace_id]


@pytest.fixture
def plan_spans(otlp_provider: TracerProvider, receiver: OtlpReceiver) -> tuple[list, list, str]:
    trace_id = request_with_workflow(otlp_provider, "req-grouper")
    request, workflow_spans = split(receiver.wait_for_spans(6), trace_id)
    return request, workflow_spans, trace_id


def only_group(groups: list[TraceGroup]) -> TraceGroup:
    assert len(groups) == 1
    return groups[0]


def test_a_request_waits_for_its_workflow_that_arrives_later(plan_spans: tuple) -> None:
    request, workflow_spans, trace_id = plan_spans
    grouper = TraceGrouper(settle=0.5, max_wait=30)
    grouper.add(request, now=100.0)
    assert grouper.pop_ready(now=110.0) == []  # settled long ago, but the workflow is missing
    grouper.add(workflow_spans, now=110.0)
    assert grouper.pop_ready(now=110.2) == []  # not settled yet
    group = only_group(grouper.pop_ready(now=110.6))
    assert [v.trace_id for v in group.traces][1:] == [trace_id]
    assert group.missing == ()
    assert grouper.pending == 0


def test_a_workflow_waits_for_the_request_that_started_it(plan_spans: tuple) -> None:
    request, workflow_spans, trace_id = plan_spans
    grouper = TraceGrouper(settle=0.5, max_wait=30)
    grouper.add(workflow_spans, now=0.0)
    assert grouper.pop_ready(now=20.0) == []
    grouper.add(request, now=20.0)
    group = only_group(grouper.pop_ready(now=21.0))
    assert group.request_id == "req-grouper"
    assert [v.trace_id for v in group.traces][1:] == [trace_id]


def test_after_max_wait_a_request_is_shown_without_its_workflow_then_the_workflow_alone(
    plan_spans: tuple,
) -> None:
    request, workflow_spans, trace_id = plan_spans
    grouper = TraceGrouper(settle=0.5, max_wait=30)
    grouper.add(request, now=0.0)
    assert grouper.pop_ready(now=29.9) == []
    group = only_group(grouper.pop_ready(now=30.0))
    assert group.missing == (trace_id,)
    text = io.StringIO()
    render_groups([group], make_console(text))
    assert f"(linked trace {trace_id} not received)" in text.getvalue()

    grouper.add(workflow_spans, now=40.0)
    late = only_group(grouper.pop_ready(now=70.0))
    assert late.top.trace_id == trace_id and late.top.is_workflow
    assert late.missing == (request[0].trace_id,)


def test_a_trace_without_its_root_is_held_for_root_wait(plan_spans: tuple) -> None:
    request, _, _ = plan_spans
    server_side = [s for s in request if s.kind != "CLIENT"]  # the caller exports elsewhere
    grouper = TraceGrouper(settle=0.5, max_wait=30, root_wait=6)
    announced = [s for s in server_side if not s.events]
    grouper.add(announced, now=0.0)
    assert grouper.pop_ready(now=5.9) == []
    assert only_group(grouper.pop_ready(now=6.0)).top.roots[0].kind == "SERVER"


def test_a_client_span_without_its_server_span_is_held_for_root_wait() -> None:
    t = "2" * 32
    root = span(t, "a" * 16, name="GET /two", kind="SERVER")
    client = span(t, "b" * 16, parent="a" * 16, name="GET", kind="CLIENT")
    grouper = TraceGrouper(settle=0.5, max_wait=30, root_wait=6)
    grouper.add([root, client], now=0.0)
    assert grouper.pop_ready(now=5.9) == []  # the callee exports on its own (5 s) schedule
    grouper.add([span(t, "c" * 16, parent="b" * 16, name="GET /inner", kind="SERVER")], now=5.0)
    assert grouper.pop_ready(now=5.4) == []
    assert only_group(grouper.pop_ready(now=5.5)).span_count == 3  # complete: settle applies
    grouper.add([span("3" * 32, "d" * 16, name="GET", kind="CLIENT")], now=10.0)
    assert grouper.pop_ready(now=15.9) == []
    assert only_group(grouper.pop_ready(now=16.0)).span_count == 1  # an untraced callee


def test_everything_flushes_incomplete_groups_and_max_spans_bounds_memory(
    plan_spans: tuple,
) -> None:
    request, _, _ = plan_spans
    grouper = TraceGrouper(max_spans=2)
    grouper.add(request, now=0.0)
    assert grouper.pending == 2
    assert len(grouper.pop_ready(now=0.0, everything=True)) == 1
    assert grouper.pending == 0


# -- colour ---------------------------------------------------------------------------------


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "no_color", "coloured"),
    [(FakeTty, None, True), (FakeTty, "1", False), (io.StringIO, None, False)],
    ids=["terminal", "NO_COLOR", "pipe"],
)
def test_colour_only_on_a_terminal_without_no_color(
    stream: type[io.StringIO],
    no_color: str | None,
    coloured: bool,
    plan_spans: tuple,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request, workflow_spans, _ = plan_spans
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    out = stream()
    render_groups(build_groups(request + workflow_spans), make_console(out))
    assert ("\x1b[" in out.getvalue()) is coloured
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
    assert plain.splitlines()[0].startswith("request req-grouper")


def test_a_long_trace_id_is_never_wrapped_in_a_pipe(plan_spans: tuple) -> None:
    request, workflow_spans, trace_id = plan_spans
    deep = [replace(s, name="x" * 100) for s in request + workflow_spans]
    out = io.StringIO()
    render_groups(build_groups(deep), make_console(out))
    assert f"trace_id={trace_id}" in out.getvalue()


def test_a_client_span_named_by_its_method_keeps_its_name_and_shows_the_path(
    otlp_provider: TracerProvider, receiver: OtlpReceiver
) -> None:
    tracer = otlp_provider.get_tracer("tree-test")
    with request_id_scope("req-method"):
        with tracer.start_as_current_span(
            "GET", kind=SpanKind.CLIENT, attributes={"url.full": "http://127.0.0.1:1/items?x=1"}
        ):
            with tracer.start_as_current_span("GET /items", kind=SpanKind.SERVER):
                pass
    spans = receiver.wait_for_spans(2)
    rows = outline(render_text(spans))
    assert rows[0][1].startswith("request req-method  GET /items  ")  # the request, summarised
    assert rows[1][1].split("  ")[:3] == ["GET", "client", "/items"]  # the span, by its name
    assert rows[2][1].split("  ")[:2] == ["GET /items", "server"]
