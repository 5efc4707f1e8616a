"""workflow(): a new trace per workflow, linked both ways to the request that started it."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from kilostar_otel import (
    get_request_id,
    get_trace_id,
    request_id_scope,
    snapshot,
    workflow,
)
from kilostar_otel.ids import is_valid_trace_id
from tests.conftest import Spans

ROOT = "invoke_workflow plan"


def _hex(span: ReadableSpan) -> str:
    return f"{span.context.trace_id:032x}"


def test_a_workflow_is_a_new_trace_linked_both_ways_to_the_request(
    tracer: trace.Tracer, spans: Spans
) -> None:
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with request_id_scope("req-1"), tracer.start_as_current_span("POST /chat"):
            with workflow("plan") as wf:
                trace_id = get_trace_id()
                assert baggage.get_baggage("tenant") == "acme"  # a new trace, not a new context
                assert get_request_id() == "req-1"
                with tracer.start_as_current_span("step"):
                    pass
            assert get_trace_id() == ""
    finally:
        context.detach(token)
    request, root, step = spans.named("POST /chat"), spans.named(ROOT), spans.named("step")

    assert trace_id == wf.trace_id == _hex(root)
    assert is_valid_trace_id(trace_id)
    assert root.parent is None
    assert _hex(root) != _hex(request)
    assert step.parent is not None
    assert step.parent.span_id == root.context.span_id
    assert dict(root.attributes) == {
        "kilostar.workflow.name": "plan",
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "plan",
        "kilostar.request_id": "req-1",
        "kilostar.trace_id": trace_id,
    }
    assert [link.context.span_id for link in root.links] == [request.context.span_id]
    assert [link.context.span_id for link in request.links] == [root.context.span_id]
    (event,) = request.events
    assert event.name == "kilostar.workflow.started"
    assert event.attributes == {"kilostar.trace_id": trace_id}
    assert step.attributes["kilostar.trace_id"] == trace_id
    assert step.attributes["kilostar.request_id"] == "req-1"
    assert "kilostar.trace_id" not in request.attributes


def test_user_attributes_go_on_the_root(spans: Spans) -> None:
    with workflow("plan", attributes={"team": "search", "priority": 2}):
        pass
    assert spans.named(ROOT).attributes["team"] == "search"
    assert spans.named(ROOT).attributes["priority"] == 2


def test_a_workflow_outside_a_request_has_no_link(spans: Spans) -> None:
    with workflow("plan"):
        pass
    root = spans.named(ROOT)
    assert root.links == ()
    assert "kilostar.request_id" not in root.attributes


def test_an_exception_is_recorded_and_reraised_and_ids_restored(
    tracer: trace.Tracer, spans: Spans
) -> None:
    with request_id_scope("req-err"), tracer.start_as_current_span("request") as request:
        with pytest.raises(ValueError, match="bad plan"), workflow("plan"):
            raise ValueError("bad plan")
        assert trace.get_current_span() is request
        assert get_trace_id() == ""
    root = spans.named(ROOT)
    assert root.status.status_code is StatusCode.ERROR
    assert "ValueError" in (root.status.description or "")
    assert [e.name for e in root.events] == ["exception"]


def test_nested_workflows_are_separate_traces(spans: Spans) -> None:
    with workflow("outer") as outer, workflow("inner") as inner:
        assert get_trace_id() == inner.trace_id
    assert outer.trace_id != inner.trace_id
    inner_root = spans.named("invoke_workflow inner")
    assert inner_root.parent is None
    assert inner_root.attributes["kilostar.trace_id"] == inner.trace_id


def test_an_active_workflow_object_cannot_be_entered_twice() -> None:
    wf = workflow("plan")
    with wf, pytest.raises(RuntimeError, match="already active"), wf:
        pass
    with wf:  # sequential reuse is fine
        pass


def test_without_an_sdk_the_trace_id_is_still_a_valid_fresh_id() -> None:
    noop = trace.NoOpTracerProvider()
    with workflow("plan", tracer_provider=noop) as wf:
        assert is_valid_trace_id(get_trace_id())
        assert get_trace_id() == wf.trace_id


async def test_async_context_manager(spans: Spans) -> None:
    with request_id_scope("req-async"):
        async with workflow("plan") as wf:
            await asyncio.sleep(0)
            assert get_trace_id() == wf.trace_id
    assert spans.named(ROOT).attributes["kilostar.request_id"] == "req-async"


def test_decorated_function(spans: Spans) -> None:
    @workflow("plan")
    def plan(x: int) -> tuple[int, str]:
        return x * 2, get_trace_id()

    result, seen = plan(21)
    assert result == 42
    assert seen == _hex(spans.named(ROOT))
    assert get_trace_id() == ""


def test_decorator_default_name_is_the_qualified_name(spans: Spans) -> None:
    @workflow()
    def summarise() -> None:
        pass

    summarise()
    (root,) = spans.all()
    assert root.name.startswith("invoke_workflow ")
    assert root.attributes["kilostar.workflow.name"].endswith("summarise")  # type: ignore[union-attr]


async def test_decorated_coroutine_runs_each_call_as_its_own_workflow(spans: Spans) -> None:
    @workflow("plan")
    async def plan() -> str:
        await asyncio.sleep(0)
        return get_trace_id()

    first, second = await asyncio.gather(plan(), plan())
    assert first != second
    assert {first, second} == {_hex(s) for s in spans.all()}


async def test_decorated_coroutine_error(spans: Spans) -> None:
    @workflow("plan")
    async def plan() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        await plan()
    assert spans.named(ROOT).status.status_code is StatusCode.ERROR


def test_decorated_generator_keeps_the_workflow_bound_only_while_it_runs(spans: Spans) -> None:
    @workflow("plan")
    def steps() -> Iterator[str]:
        for _ in range(3):
            yield get_trace_id()

    seen = []
    with request_id_scope("req-gen"):
        for tid in steps():
            seen.append(tid)
            assert get_trace_id() == ""  # restored between yields
            assert get_request_id() == "req-gen"
    assert len(set(seen)) == 1
    assert seen[0] == _hex(spans.named(ROOT))
    assert spans.named(ROOT).end_time is not None


def test_generator_send_and_throw_are_forwarded(spans: Spans) -> None:
    @workflow("plan")
    def echo() -> Iterator[str]:
        received = yield "ready"
        try:
            yield f"got {received}"
        except ValueError:
            yield "handled"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("x") == "got x"
    assert gen.throw(ValueError("v")) == "handled"
    gen.close()
    assert spans.named(ROOT).end_time is not None


def _detach_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "Failed to detach context" in r.getMessage()]


def test_breaking_out_of_a_generator_ends_the_span_without_detach_errors(
    spans: Spans, caplog: pytest.LogCaptureFixture
) -> None:
    cleaned = []

    @workflow("plan")
    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            cleaned.append(get_trace_id())

    for n in endless():
        if n == 2:
            break
    gc.collect()
    assert _detach_errors(caplog) == []
    root = spans.named(ROOT)
    assert root.end_time is not None
    assert root.status.status_code is StatusCode.UNSET
    assert cleaned == [_hex(root)]  # the generator's finally ran inside the workflow
    assert get_trace_id() == ""


def test_a_generator_dropped_mid_way_is_finalised_by_gc(
    spans: Spans, caplog: pytest.LogCaptureFixture
) -> None:
    @workflow("plan")
    def endless() -> Iterator[int]:
        while True:
            yield 1

    gen = endless()
    next(gen)
    del gen
    gc.collect()
    assert spans.named(ROOT).end_time is not None
    assert _detach_errors(caplog) == []


def test_generator_exception_is_recorded(spans: Spans) -> None:
    @workflow("plan")
    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("mid-stream")

    with pytest.raises(RuntimeError, match="mid-stream"):
        list(failing())
    assert spans.named(ROOT).status.status_code is StatusCode.ERROR


def test_generator_return_value_is_kept() -> None:
    @workflow("plan")
    def gen() -> Iterator[int]:
        yield 1
        return "done"  # type: ignore[misc]

    def outer() -> Iterator[int]:
        result = yield from gen()
        assert result == "done"

    assert list(outer()) == [1]


async def test_decorated_async_generator(spans: Spans) -> None:
    @workflow("plan")
    async def stream() -> AsyncIterator[str]:
        for _ in range(3):
            await asyncio.sleep(0)
            yield get_trace_id()

    seen = [tid async for tid in stream()]
    assert seen == [_hex(spans.named(ROOT))] * 3


async def test_break_out_of_async_for_and_aclosing(
    spans: Spans, caplog: pytest.LogCaptureFixture
) -> None:
    @workflow("plan")
    async def endless() -> AsyncIterator[int]:
        n = 0
        while True:
            await asyncio.sleep(0)
            yield n
            n += 1

    async with aclosing(endless()) as stream:
        async for n in stream:
            if n == 3:
                break
    assert spans.named(ROOT).end_time is not None
    spans.clear()

    stream2 = endless()
    async for n in stream2:
        if n == 1:
            break
    del stream2
    gc.collect()
    await asyncio.sleep(0.05)  # let the loop run the async-generator finaliser
    assert spans.named(ROOT).end_time is not None
    assert _detach_errors(caplog) == []
    assert get_trace_id() == ""


async def test_async_generator_asend_and_athrow(spans: Spans) -> None:
    @workflow("plan")
    async def echo() -> AsyncIterator[str]:
        received = yield "ready"
        try:
            yield f"got {received}"
        except ValueError:
            yield "handled"

    agen = echo()
    assert await agen.asend(None) == "ready"
    assert await agen.asend("x") == "got x"
    assert await agen.athrow(ValueError("v")) == "handled"
    await agen.aclose()
    assert spans.named(ROOT).end_time is not None


def test_snapshot_inside_a_workflow_names_it(spans: Spans) -> None:
    with request_id_scope("req-s"), workflow("plan") as wf:
        snap = snapshot()
    assert snap["trace_id"] == wf.trace_id
    assert snap["traceparent"].split("-")[1] == wf.trace_id
    assert snap["request_id"] == "req-s"


class _CurrentAtEnd(SpanProcessor):
    """Notes, for each span that ends, the span that is current at that moment."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_end(self, span: ReadableSpan) -> None:
        current = trace.get_current_span()
        self.seen.append((span.name, getattr(current, "name", "")))


@pytest.mark.parametrize("form", ["with", "decorator", "generator"])
def test_the_root_ends_after_the_workflow_is_detached(form: str) -> None:
    watcher = _CurrentAtEnd()
    provider = TracerProvider()
    provider.add_span_processor(watcher)
    plan = workflow("plan", tracer_provider=provider)

    @workflow("plan", tracer_provider=provider)
    def step() -> None:
        pass

    @workflow("plan", tracer_provider=provider)
    def steps() -> Iterator[int]:
        yield 1

    with provider.get_tracer("t").start_as_current_span("caller"):
        if form == "with":
            with pytest.raises(KeyError), plan:
                raise KeyError("k")
        elif form == "decorator":
            step()
        else:
            list(steps())
    # The caller's span is current again when the root ends (what ending triggers is the caller's).
    assert watcher.seen == [(ROOT, "caller"), ("caller", "")]


def test_each_workflow_records_on_its_own_provider(spans: Spans) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporters = [InMemorySpanExporter(), InMemorySpanExporter()]
    providers = []
    for exporter in exporters:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
    # Alternating providers (and the global one) each get their own workflows' roots.
    for name, provider in [("a", 0), ("b", 1), ("c", None), ("d", 0), ("e", 0), ("f", 1)]:
        with workflow(name, tracer_provider=None if provider is None else providers[provider]):
            pass
    assert [s.name for s in exporters[0].get_finished_spans()] == [
        "invoke_workflow a",
        "invoke_workflow d",
        "invoke_workflow e",
    ]
    assert [s.name for s in exporters[1].get_finished_spans()] == [
        "invoke_workflow b",
        "invoke_workflow f",
    ]
    assert [s.name for s in spans.all()] == ["invoke_workflow c"]
    for exporter in exporters:
        assert {s.instrumentation_scope.name for s in exporter.get_finished_spans()} == {
            "kilostar_otel"
        }
