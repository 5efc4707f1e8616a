"""The micro-benchmark cases: each of kilostar-otel's hot paths and its peers, built the same way.

A case's ``build()`` sets one arm up and returns an :class:`Arm`: ``run`` is the operation that is
timed, ``check`` proves (with assertions) that the arm really did its job, ``close`` undoes the set
up. ``bench_micro.py`` times ``run`` with pytest-benchmark; ``tests/benchmarks`` runs every arm a
few times and calls ``check``, so a benchmark can never silently measure an arm that does nothing.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import baggage
from opentelemetry.context import Context, attach, detach, get_current, get_value
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    format_trace_id,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kilostar_otel import (
    KiloStarSpanProcessor,
    default_propagator,
    get_request_id,
    get_trace_id,
    request_id_scope,
    workflow,
)
from kilostar_otel._idcontext import TRACE_ID_KEY
from kilostar_otel._internals import SPAN_KEY
from kilostar_otel.context import context_with_request_id
from kilostar_otel.integrations.logging import (
    LOG_EVENT,
    SpanEventHandler,
    install_loguru_span_events,
)

__all__ = ["CASES", "GROUPS", "Arm", "Case", "Group", "Target", "cases_of"]

#: The request id every case binds (the shape ``new_request_id()`` makes).
REQUEST_ID = "req-4bf92f3577b34da6a3ce929d0e0e4736"
#: An incoming ``X-Request-Id`` both ASGI middlewares accept (asgi-correlation-id wants a UUID).
INCOMING_ID = "6f1b0c6a9d2e4f5a8b7c3d2e1f0a9b8c"
#: Queue of the batch processor in every span arm: a tight benchmark loop outruns the no-op
#: export now and then, and a drop (and its log line) must not be part of what is timed.
QUEUE_SIZE = 1 << 16


@dataclass(frozen=True)
class Arm:
    """One built arm: ``run`` is timed, ``check`` asserts it did its job, ``close`` tears down."""

    run: Callable[[], object]
    check: Callable[[], None]
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Case:
    """One arm of a group: ``role`` is ``"ours"``, ``"peer"`` or ``"baseline"``."""

    group: str
    name: str
    label: str
    role: str
    build: Callable[[], Arm]

    @property
    def key(self) -> str:
        """``group/name``, the benchmark's id."""
        return f"{self.group}/{self.name}"


@dataclass(frozen=True)
class Target:
    """A goal from issue 7: median(ours) / median(``other``) must not exceed ``max_ratio``."""

    other: str
    max_ratio: float
    strict: bool = False  # True: the ratio must be below max_ratio ("faster than")

    def met(self, ratio: float) -> bool:
        """Whether ``ratio`` meets the target."""
        return ratio < self.max_ratio if self.strict else ratio <= self.max_ratio

    def describe(self) -> str:
        """The target in words, for the table."""
        if self.max_ratio == 1.0:
            return "faster" if self.strict else "no slower"
        return f"{'<' if self.strict else '≤'} {self.max_ratio:.2f}\u00d7"


@dataclass(frozen=True)
class Group:
    """What a group measures, which arm is ours, and the targets against the other arms."""

    key: str
    title: str
    what: str
    targets: tuple[Target, ...] = field(default_factory=tuple)


# -- helpers --------------------------------------------------------------------------------------


class CountingExporter(SpanExporter):
    """Counts exported spans and keeps the last one; sends nothing anywhere (a no-op exporter)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Count the batch and remember its last span."""
        self.count += len(spans)
        if spans:
            self.last = spans[-1]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def realistic_provider(
    *first: SpanProcessor,
) -> tuple[TracerProvider, CountingExporter]:
    """A provider as an application has it: ``first`` processors, then a default batch export.

    Every span arm uses this, so each pays the same SDK and batch-queue cost and differs only in
    ``first``: the export step is the SDK's ``BatchSpanProcessor`` (defaults but a larger queue)
    with a no-op exporter.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": "kilostar-bench"}))
    for processor in first:
        provider.add_span_processor(processor)
    exporter = CountingExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=QUEUE_SIZE))
    return provider, exporter


def _attached(ctx: Context) -> Callable[[], None]:
    token = attach(ctx)
    return lambda: detach(token)


def _last_exported(provider: TracerProvider, exporter: CountingExporter) -> ReadableSpan:
    assert provider.force_flush(10_000)
    span = exporter.last
    assert span is not None, "nothing was exported"
    return span


# -- 1. binding a request id for a scope ----------------------------------------------------------


def _bind_kilostar() -> Arm:
    def run() -> None:
        with request_id_scope(REQUEST_ID):
            pass

    def check() -> None:
        with request_id_scope(REQUEST_ID):
            assert get_request_id() == REQUEST_ID
            assert baggage.get_baggage("kilostar.request_id") == REQUEST_ID
        assert get_request_id() == ""

    return Arm(run, check)


_request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def _bind_contextvar() -> Arm:
    var = _request_id_var

    def run() -> None:
        var.reset(var.set(REQUEST_ID))

    def check() -> None:
        token = var.set(REQUEST_ID)
        assert var.get() == REQUEST_ID
        var.reset(token)
        assert var.get() == ""

    return Arm(run, check)


def _bind_using_session() -> Arm:
    from openinference.instrumentation import using_session
    from openinference.semconv.trace import SpanAttributes

    def run() -> None:
        with using_session(REQUEST_ID):
            pass

    def check() -> None:
        with using_session(REQUEST_ID):
            assert get_value(SpanAttributes.SESSION_ID) == REQUEST_ID
        assert get_value(SpanAttributes.SESSION_ID) is None

    return Arm(run, check)


# -- 2. propagator inject + extract ---------------------------------------------------------------


def _request_contexts() -> tuple[Context, Context]:
    """Two outgoing-request contexts (so no per-context cache can help): a span and 3 baggage."""
    contexts = []
    for n, rid in enumerate((REQUEST_ID, REQUEST_ID[:-4] + "beef")):
        span_context = SpanContext(
            trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736 + n,
            span_id=0x00F067AA0BA902B7 + n,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        ctx = set_span_in_context(NonRecordingSpan(span_context), Context())
        ctx = baggage.set_baggage("tenant.id", "acme-corp", ctx)
        ctx = baggage.set_baggage("user.tier", "pro", ctx)
        contexts.append(context_with_request_id(ctx, rid))
    return contexts[0], contexts[1]


def _propagation_arm(propagator: Any, read_id: Callable[[Context], object]) -> Arm:
    contexts = _request_contexts()
    next_context = itertools.cycle(contexts).__next__
    inject, extract = propagator.inject, propagator.extract

    def run() -> None:
        carrier: dict[str, str] = {}
        inject(carrier, next_context())
        extract(carrier)

    def check() -> None:
        for ctx in contexts:
            carrier: dict[str, str] = {}
            inject(carrier, ctx)
            out = extract(carrier)
            assert read_id(out) == get_request_id(ctx)
            assert baggage.get_baggage("tenant.id", out) == "acme-corp"
            sent = get_current_span(ctx).get_span_context()
            got = get_current_span(out).get_span_context()
            assert (got.trace_id, got.span_id, got.is_remote) == (sent.trace_id, sent.span_id, True)

    return Arm(run, check)


def _propagate_kilostar() -> Arm:
    return _propagation_arm(default_propagator(), get_request_id)


def _propagate_otel() -> Arm:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    propagator = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    return _propagation_arm(propagator, lambda ctx: baggage.get_baggage("kilostar.request_id", ctx))


# -- 3. span start + end --------------------------------------------------------------------------


def _span_arm(first: tuple[SpanProcessor, ...], expect: dict[str, str]) -> Arm:
    provider, exporter = realistic_provider(*first)
    tracer = provider.get_tracer("kilostar-bench")
    # Only the request id is in baggage, so every arm has exactly one id to stamp.
    detach_ctx = _attached(context_with_request_id(Context(), REQUEST_ID))
    start_span = tracer.start_span

    def run() -> None:
        start_span("op").end()

    def check() -> None:
        start_span("checked").end()
        span = _last_exported(provider, exporter)
        assert span.name == "checked"
        assert {k: span.attributes.get(k) for k in expect} == expect  # type: ignore[union-attr]
        if not expect:
            assert "kilostar.request_id" not in (span.attributes or {})

    def close() -> None:
        detach_ctx()
        provider.shutdown()

    return Arm(run, check, close)


def _span_none() -> Arm:
    return _span_arm((), {})


def _span_kilostar() -> Arm:
    return _span_arm((KiloStarSpanProcessor(),), {"kilostar.request_id": REQUEST_ID})


def _span_baggage_processor() -> Arm:
    from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor

    class FlushableBaggageSpanProcessor(BaggageSpanProcessor):
        # In older SDKs (1.40 among them) the base force_flush returns None: the provider reads it
        # as a failed flush and stops before the batch processor behind it is flushed.
        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return _span_arm(
        (FlushableBaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS),),
        {"kilostar.request_id": REQUEST_ID},
    )


# -- 4. a request through the ASGI middleware -----------------------------------------------------


def _starlette_app(middleware: list[Any]) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", home)], middleware=middleware)


def _http_scope(incoming_id: str | None) -> dict[str, Any]:
    headers = [
        (b"host", b"api.example"),
        (b"user-agent", b"bench/1.0"),
        (b"accept", b"*/*"),
    ]
    if incoming_id is not None:
        headers.append((b"x-request-id", incoming_id.encode("ascii")))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def _asgi_arm(middleware: list[Any], incoming_id: str | None, echoes: bool) -> Arm:
    """Drive the ASGI app in-process: nothing in it waits, so one ``send(None)`` completes it."""
    app = _starlette_app(middleware)
    scope = _http_scope(incoming_id)
    last: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            last[:] = [message]

    def run() -> None:
        # A fresh scope per request, as a server makes (middlewares may rewrite its headers).
        coroutine = app({**scope, "headers": list(scope["headers"])}, receive, send)
        try:
            coroutine.send(None)
        except StopIteration:
            return
        coroutine.close()
        raise RuntimeError("the ASGI app waited on something; drive it with an event loop")

    def check() -> None:
        last.clear()
        run()
        assert last, "no response was sent"
        assert last[0]["status"] == 200
        echoed = [v.decode() for k, v in last[0]["headers"] if k.lower() == b"x-request-id"]
        if not echoes:
            assert echoed == []
        elif incoming_id is not None:
            assert echoed == [incoming_id]
        else:
            assert len(echoed) == 1
            assert len(echoed[0]) >= 32

    run()  # builds Starlette's middleware stack outside the timing
    return Arm(run, check)


def _asgi_factory(which: str, incoming_id: str | None) -> Callable[[], Arm]:
    def build() -> Arm:
        from starlette.middleware import Middleware

        if which == "none":
            return _asgi_arm([], incoming_id, echoes=False)
        if which == "kilostar":
            from kilostar_otel.integrations.asgi import RequestIdMiddleware

            return _asgi_arm([Middleware(RequestIdMiddleware)], incoming_id, echoes=True)
        from asgi_correlation_id import CorrelationIdMiddleware

        return _asgi_arm([Middleware(CorrelationIdMiddleware)], incoming_id, echoes=True)

    return build


# -- 5. workflow() enter + exit -------------------------------------------------------------------


def _workflow_arm(use_workflow: bool, in_request: bool) -> Arm:
    provider, exporter = realistic_provider(KiloStarSpanProcessor())
    tracer = provider.get_tracer("kilostar-bench")
    ctx = context_with_request_id(Context(), REQUEST_ID)
    request_span = None
    if in_request:
        # Inside a request: its id bound and its server span current (and recording).
        request_span = tracer.start_span("GET /plan", kind=SpanKind.SERVER)
        ctx = set_span_in_context(request_span, ctx)
    detach_ctx = _attached(ctx)

    if use_workflow:

        def run() -> None:
            with workflow("plan", tracer_provider=provider):
                pass

    else:

        def run() -> None:
            with tracer.start_as_current_span("plan"):
                pass

    def check() -> None:
        if use_workflow:
            with workflow("plan", tracer_provider=provider) as wf:
                assert get_trace_id() == wf.trace_id
            span = _last_exported(provider, exporter)
            assert span.context is not None
            assert span.parent is None
            assert span.attributes is not None
            assert span.attributes["kilostar.trace_id"] == format_trace_id(span.context.trace_id)
            assert span.attributes["kilostar.request_id"] == REQUEST_ID
            linked = [link.context.span_id for link in span.links]
            if request_span is not None:
                assert linked == [request_span.get_span_context().span_id]
                assert request_span.events[-1].name == "kilostar.workflow.started"  # type: ignore[attr-defined]
            else:
                assert linked == []
        else:
            with tracer.start_as_current_span("plan"):
                pass
            span = _last_exported(provider, exporter)
            if request_span is not None:
                assert span.parent is not None
                assert span.parent.span_id == request_span.get_span_context().span_id
            else:
                assert span.parent is None
            assert span.attributes is not None
            assert span.attributes["kilostar.request_id"] == REQUEST_ID

    def close() -> None:
        detach_ctx()
        if request_span is not None:
            request_span.end()
        provider.shutdown()

    return Arm(run, check, close)


def _workflow_by_hand() -> Arm:
    """What ``workflow()`` does inside a request, written against the SDK directly: the floor.

    The same observable work, done per call as in an application, where every workflow starts in
    another request: read the request's context, span and id; start the root (the request's
    context without its span, so the same baggage; the 4 attributes; a link to the request span);
    stamp its trace id; link the request span to it and add the event; bind the root with its
    trace id, so that spans inside it are stamped; then unbind and end it. Only the tracer and the
    names are made once. Each context is one copy, the leanest way to write it.
    """
    provider, exporter = realistic_provider(KiloStarSpanProcessor())
    tracer = provider.get_tracer("kilostar-bench")
    request_span = tracer.start_span("GET /plan", kind=SpanKind.SERVER)
    ctx = context_with_request_id(Context(), REQUEST_ID)
    detach_ctx = _attached(set_span_in_context(request_span, ctx))

    def run(inside: Callable[[], object] | None = None) -> None:
        parent = get_current()
        request = get_current_span(parent)
        start = dict(parent)
        del start[SPAN_KEY]
        root = tracer.start_span(
            "invoke_workflow plan",
            context=Context(start),
            attributes={
                "kilostar.workflow.name": "plan",
                "gen_ai.operation.name": "invoke_workflow",
                "gen_ai.workflow.name": "plan",
                "kilostar.request_id": get_request_id(),
            },
            links=(Link(request.get_span_context()),),
        )
        root_context = root.get_span_context()
        trace_id = format_trace_id(root_context.trace_id)
        root.set_attribute("kilostar.trace_id", trace_id)
        request.add_link(root_context)
        request.add_event("kilostar.workflow.started", {"kilostar.trace_id": trace_id})
        token = attach(Context({**parent, SPAN_KEY: root, TRACE_ID_KEY: trace_id}))
        if inside is not None:
            inside()
        detach(token)
        root.end()

    def check() -> None:
        steps: list[ReadableSpan] = []

        def inside() -> None:
            step = tracer.start_span("step")
            step.end()
            steps.append(step)  # type: ignore[arg-type]

        run(inside)
        root = _last_exported(provider, exporter)
        (step,) = steps
        assert root.name == "invoke_workflow plan"
        assert step.parent is not None
        assert root.context is not None
        assert step.parent.span_id == root.context.span_id
        assert root.parent is None
        trace_id = format_trace_id(root.context.trace_id)
        assert root.attributes == {
            "kilostar.workflow.name": "plan",
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": "plan",
            "kilostar.request_id": REQUEST_ID,
            "kilostar.trace_id": trace_id,
        }
        assert step.attributes == {"kilostar.request_id": REQUEST_ID, "kilostar.trace_id": trace_id}
        assert [link.context.span_id for link in root.links] == [
            request_span.get_span_context().span_id
        ]
        assert request_span.links[-1].context.span_id == root.context.span_id  # type: ignore[attr-defined]
        event = request_span.events[-1]  # type: ignore[attr-defined]
        assert event.name == "kilostar.workflow.started"
        assert event.attributes == {"kilostar.trace_id": trace_id}
        assert get_current_span() is request_span
        assert get_trace_id() == ""

    def close() -> None:
        detach_ctx()
        request_span.end()
        provider.shutdown()

    return Arm(run, check, close)


# -- 6. a log line inside a span, with and without the span-event opt-in ---------------------------


class _FormattingHandler(logging.Handler):
    """Formats every record and keeps the last line: a log sink that writes nowhere."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.lines = 0
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = self.format(record)
        self.lines += 1


def _log_stdlib_arm(span_events: bool) -> Arm:
    provider, _exporter = realistic_provider(KiloStarSpanProcessor())
    log = logging.getLogger(f"kilostar.bench.log.{'events' if span_events else 'plain'}")
    log.setLevel(logging.INFO)
    log.propagate = False
    sink = _FormattingHandler()
    handlers: list[logging.Handler] = [sink]
    if span_events:
        # No cap in reach: every timed call records an event (the SDK keeps the last 128).
        handlers.append(SpanEventHandler(max_events_per_span=1 << 62))
    for handler in handlers:
        log.addHandler(handler)
    span = provider.get_tracer("bench").start_span("request")
    detach_ctx = _attached(set_span_in_context(span))

    def run() -> None:
        log.info("planned %d steps for %s", 3, REQUEST_ID)

    def check() -> None:
        assert sink.lines > 0
        assert sink.last.endswith(f"planned 3 steps for {REQUEST_ID}")
        events = [e for e in span.events if e.name == LOG_EVENT]  # type: ignore[attr-defined]
        if span_events:
            assert events
            assert events[-1].attributes["message"] == (f"planned 3 steps for {REQUEST_ID}")
        else:
            assert not events

    def close() -> None:
        detach_ctx()
        span.end()
        for handler in handlers:
            log.removeHandler(handler)
        provider.shutdown()

    return Arm(run, check, close)


def _log_loguru_arm(span_events: bool) -> Arm:
    from loguru import logger

    provider, _exporter = realistic_provider(KiloStarSpanProcessor())
    lines: list[str] = []

    def sink_fn(message: Any) -> None:
        lines[:] = [str(message)]

    sink = logger.add(sink_fn, level="INFO", format="{time} {level} {name} {message}")
    remove_events = (
        install_loguru_span_events(level="INFO", max_events_per_span=1 << 62)
        if span_events
        else (lambda: None)
    )
    span = provider.get_tracer("bench").start_span("request")
    detach_ctx = _attached(set_span_in_context(span))

    def run() -> None:
        logger.info("planned {} steps for {}", 3, REQUEST_ID)

    def check() -> None:
        assert lines
        assert lines[-1].rstrip().endswith(f"planned 3 steps for {REQUEST_ID}")
        events = [e for e in span.events if e.name == LOG_EVENT]  # type: ignore[attr-defined]
        assert bool(events) is span_events

    def close() -> None:
        detach_ctx()
        span.end()
        remove_events()
        logger.remove(sink)
        provider.shutdown()

    return Arm(run, check, close)


# -- the registry ---------------------------------------------------------------------------------

GROUPS: dict[str, Group] = {
    g.key: g
    for g in (
        Group(
            "bind",
            "1. Bind a request id for a scope (enter + exit)",
            "`with request_id_scope(rid)` (the id in the OTel context and in baggage) vs a bare "
            "`ContextVar` set/reset and OpenInference's `with using_session(rid)`.",
            (Target("using_session", 1.0),),
        ),
        Group(
            "propagate",
            "2. Propagator inject + extract of one request's headers",
            "`default_propagator()` vs OTel's composite (`TraceContextTextMapPropagator` + "
            "`W3CBaggagePropagator`), from a context with a sampled span and 3 baggage entries "
            "(one of them `kilostar.request_id`); two such contexts alternate, so nothing is "
            "cached.",
            (Target("otel_composite", 1.25),),
        ),
        Group(
            "span",
            "3. Span start + end",
            "`tracer.start_span('op').end()` with a request id bound. Every arm is the same "
            "`TracerProvider` with the SDK's default `BatchSpanProcessor` and a no-op exporter; "
            "the arms differ only in the processor added before it.",
            (Target("no_processor", 1.10), Target("baggage_processor", 1.0, strict=True)),
        ),
        Group(
            "asgi_id",
            "4a. A request through the ASGI middleware (incoming X-Request-Id)",
            "The same Starlette app (one route, plain-text response) driven in-process with a "
            "request that carries a valid `X-Request-Id`, behind `RequestIdMiddleware` or "
            "asgi-correlation-id's `CorrelationIdMiddleware` (defaults), or no middleware.",
            (Target("asgi_correlation_id", 1.0),),
        ),
        Group(
            "asgi_new",
            "4b. A request through the ASGI middleware (no incoming id: one is generated)",
            "As 4a, but the request has no `X-Request-Id`, so each middleware makes a new id.",
            (Target("asgi_correlation_id", 1.0),),
        ),
        Group(
            "workflow",
            "5a. `workflow()` enter + exit vs a plain span, inside a request",
            "Inside a request (id bound, its server span current and recording): "
            "`with workflow('plan')` (a root span in a new trace with 4 attributes and a link to "
            "the request span, plus a link and an event added to the request span) vs "
            "`with tracer.start_as_current_span('plan')` (a child span); both on the provider "
            "of 3 with `KiloStarSpanProcessor`. A third arm does all that `workflow()` does, "
            "written by hand with the SDK's public API: per call it reads the request's "
            "context, span and id, starts the same root (attributes, link), links the request "
            "span to it and adds the event, and binds the root with its trace id (so spans "
            "inside are stamped) in one context copy each.",
            (Target("by_hand", 1.0), Target("start_as_current_span", 1.5)),
        ),
        Group(
            "workflow_bare",
            "5b. `workflow()` enter + exit vs a plain span, outside a request",
            "As 5a with the request id bound but no current span (a job or a worker): no links, "
            "no event; the plain span is then a root span too.",
            (Target("start_as_current_span", 1.5),),
        ),
        Group(
            "log_stdlib",
            "6a. A stdlib log line inside a span, as a span event or not",
            "`logger.info(...)` with a formatting handler, inside a recording span (the provider "
            "of 3 with `KiloStarSpanProcessor`), with `SpanEventHandler` added (the opt-in: each "
            "line also becomes a span event; cap out of reach, so every call records one) vs "
            "the same logger without it.",
        ),
        Group(
            "log_loguru",
            "6b. A loguru log line inside a span, as a span event or not",
            "As 6a with loguru: a formatting sink, plus `install_loguru_span_events()` or not.",
        ),
    )
}

CASES: tuple[Case, ...] = (
    Case("bind", "kilostar", "request_id_scope()", "ours", _bind_kilostar),
    Case("bind", "contextvar", "bare ContextVar set/reset", "baseline", _bind_contextvar),
    Case("bind", "using_session", "openinference using_session()", "peer", _bind_using_session),
    Case("propagate", "kilostar", "default_propagator()", "ours", _propagate_kilostar),
    Case("propagate", "otel_composite", "OTel tracecontext + baggage", "peer", _propagate_otel),
    Case("span", "kilostar", "+ KiloStarSpanProcessor", "ours", _span_kilostar),
    Case("span", "no_processor", "no extra processor", "baseline", _span_none),
    Case(
        "span",
        "baggage_processor",
        "+ BaggageSpanProcessor (all keys)",
        "peer",
        _span_baggage_processor,
    ),
    Case(
        "asgi_id", "kilostar", "RequestIdMiddleware", "ours", _asgi_factory("kilostar", INCOMING_ID)
    ),
    Case(
        "asgi_id",
        "asgi_correlation_id",
        "asgi-correlation-id",
        "peer",
        _asgi_factory("correlation", INCOMING_ID),
    ),
    Case("asgi_id", "none", "no middleware", "baseline", _asgi_factory("none", INCOMING_ID)),
    Case("asgi_new", "kilostar", "RequestIdMiddleware", "ours", _asgi_factory("kilostar", None)),
    Case(
        "asgi_new",
        "asgi_correlation_id",
        "asgi-correlation-id",
        "peer",
        _asgi_factory("correlation", None),
    ),
    Case("asgi_new", "none", "no middleware", "baseline", _asgi_factory("none", None)),
    Case("workflow", "kilostar", "workflow()", "ours", lambda: _workflow_arm(True, True)),
    Case(
        "workflow",
        "start_as_current_span",
        "tracer.start_as_current_span()",
        "baseline",
        lambda: _workflow_arm(False, True),
    ),
    Case(
        "workflow",
        "by_hand",
        "the same spans, links and event by hand",
        "baseline",
        _workflow_by_hand,
    ),
    Case("workflow_bare", "kilostar", "workflow()", "ours", lambda: _workflow_arm(True, False)),
    Case(
        "workflow_bare",
        "start_as_current_span",
        "tracer.start_as_current_span()",
        "baseline",
        lambda: _workflow_arm(False, False),
    ),
    Case(
        "log_stdlib",
        "kilostar",
        "+ SpanEventHandler",
        "ours",
        lambda: _log_stdlib_arm(True),
    ),
    Case("log_stdlib", "plain", "logging alone", "baseline", lambda: _log_stdlib_arm(False)),
    Case(
        "log_loguru",
        "kilostar",
        "+ install_loguru_span_events()",
        "ours",
        lambda: _log_loguru_arm(True),
    ),
    Case("log_loguru", "plain", "loguru alone", "baseline", lambda: _log_loguru_arm(False)),
)


def cases_of(group: str) -> list[Case]:
    """The cases of ``group``, ours first."""
    return [c for c in CASES if c.group == group]
