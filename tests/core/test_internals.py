"""Foreign internals are fenced in ``_internals``, and each fast path is live on these versions.

If an upgrade of OpenTelemetry, loguru or Ray moves an internal, the fenced function falls back to
the public API: correct, but slower. These tests make that fall-back visible as a failure.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from opentelemetry import baggage, context, trace

from kilostar_otel import _internals, request_id_scope

SRC = Path(_internals.__file__).resolve().parent

# Private names of OpenTelemetry, loguru and Ray, as they appear in code that reaches for them.
FOREIGN_PRIVATE = re.compile(
    r"from opentelemetry[\w.]* import [^\n]*\b_[A-Za-z]"
    r"|\b_RUNTIME_CONTEXT\b|\._current_context\b|\b_SPAN_KEY\b|\b_BAGGAGE_KEY\b"
    r"|(?<!self)\._attributes\b|\._dict\b|\._immutable\b|\._dq\b|\._core\b|\._readable_span\b"
    r"|\._batch_processor\b|\._active_span_processor\b|\._span_processors\b"
    r"|\._translate_data\b|\._is_tracing_enabled\b|\bray\._private\b|ray\._private\."
    r"|\bimport _OTelSDKConfigurator\b"
    r"|(?:getattr|hasattr)\([^)]*[\"']_(?:batch_processor|queue|shutdown|active_span_processor"
    r"|span_processors|attributes|core|current_context|dq|dict|immutable)[\"']"
)

# Modules that still reach for foreign privates directly; each use has a named function in
# _internals to route through. Remove a file here once it is routed.
NOT_YET_ROUTED: set[str] = set()


@pytest.mark.parametrize("name", sorted(_internals.FAST_PATHS))
def test_fast_path_is_taken_on_the_installed_versions(name: str) -> None:
    assert _internals.FAST_PATHS[name]() is True, f"{name} fell back to its public slow path"


def test_every_fenced_function_has_a_fast_path_check() -> None:
    checks = "\n".join(inspect.getsource(check) for check in _internals.FAST_PATHS.values())
    checked = {
        name for name in _internals.__all__ if name in checks or name in _internals.FAST_PATHS
    }
    covered_by_siblings = {
        # Picked together with current_context from the same ContextVar.
        "attach_context",
        "reset_context",
        "runtime_context_var",
        "FAST_PATHS",
    }
    assert set(_internals.__all__) - checked - covered_by_siblings == set()


def test_every_fenced_function_says_where_it_was_verified_and_its_fallback() -> None:
    for name in _internals.__all__:
        value = getattr(_internals, name)
        if not inspect.isfunction(value):
            continue
        doc = inspect.getdoc(value) or ""
        assert "Verified on" in doc or "verified on" in doc, name
        assert "Fallback" in doc or "fallback" in doc, name


def test_no_module_but_internals_touches_a_foreign_private() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative == "_internals.py" or relative in NOT_YET_ROUTED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FOREIGN_PRIVATE.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []


def test_the_scan_finds_a_foreign_private() -> None:
    # The scan above must be able to fail.
    assert FOREIGN_PRIVATE.search("from opentelemetry.baggage import _BAGGAGE_KEY")
    assert FOREIGN_PRIVATE.search("x = span._attributes")
    assert FOREIGN_PRIVATE.search("ray._private.worker.global_worker")
    assert FOREIGN_PRIVATE.search('getattr(batch, "_batch_processor", batch)')
    assert not FOREIGN_PRIVATE.search("self._attributes = dict(attributes)")
    assert not FOREIGN_PRIVATE.search("from opentelemetry.context import Context")


def test_the_context_primitives_are_otels_own_context() -> None:
    token = _internals.attach_context(baggage.set_baggage("k", "v"))
    try:
        assert _internals.current_context() is context.get_current()
        assert baggage.get_baggage("k") == "v"
    finally:
        _internals.reset_context(token)
    assert baggage.get_baggage("k") is None
    with request_id_scope("req-keys"):
        ctx = context.get_current()
        assert type(ctx[_internals.BAGGAGE_KEY]) is dict
        assert baggage.get_baggage("kilostar.request_id", ctx) == "req-keys"


def test_reset_context_raises_for_a_reused_token() -> None:
    # Unlike opentelemetry.context.detach (which logs and carries on): the seed's semantics.
    token = _internals.attach_context(context.get_current())
    _internals.reset_context(token)
    with pytest.raises(RuntimeError):
        _internals.reset_context(token)


def test_span_key_is_where_otel_keeps_the_current_span(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("s") as span:
        assert context.get_current()[_internals.SPAN_KEY] is span


def test_writable_attributes_declines_when_limits_apply() -> None:
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    limited = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=8))
    span = limited.get_tracer("t").start_span("s")
    assert _internals.writable_attributes(span, 1) is None
    _internals.stamp_attribute(span, "k", "a-long-value")
    assert span.attributes["k"] == "a-long-v"  # the public path applied the limit
    full = TracerProvider(span_limits=SpanLimits(max_span_attributes=1))
    span = full.get_tracer("t").start_span("s", attributes={"a": 1})
    assert _internals.writable_attributes(span, 1) is None
    assert _internals.writable_attributes(object(), 1) is None


def _links_and_events(span: object) -> tuple[list[object], list[object]]:
    links = [(link.context, dict(link.attributes), link.dropped_attributes) for link in span.links]  # type: ignore[attr-defined]
    events = [(e.name, dict(e.attributes), e.dropped_attributes) for e in span.events]  # type: ignore[attr-defined]
    return links, events


@pytest.mark.parametrize(
    "limits",
    [
        {},
        {"max_links": 1, "max_events": 1},
        {"max_event_attributes": 0, "max_link_attributes": 0},
        {"max_attribute_length": 8},
        {"max_attribute_length": 32},
    ],
    ids=["defaults", "one-each", "no-attributes", "values-cut", "values-fit"],
)
def test_add_link_and_add_string_event_record_what_the_sdk_methods_record(
    limits: dict[str, int],
) -> None:
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    tracer = TracerProvider(span_limits=SpanLimits(**limits)).get_tracer("t")
    ours, theirs = tracer.start_span("ours"), tracer.start_span("theirs")
    targets = [tracer.start_span(f"to-{n}").get_span_context() for n in range(3)]
    invalid = trace.INVALID_SPAN_CONTEXT
    for target in [*targets, invalid]:
        _internals.add_link(ours, target)
        theirs.add_link(target)
        _internals.add_string_event(ours, "started", "kilostar.trace_id", f"{target.trace_id:032x}")
        theirs.add_event("started", {"kilostar.trace_id": f"{target.trace_id:032x}"})
    for span in (ours, theirs):
        span.end()
    # Ended: refused by both, as the SDK refuses it.
    _internals.add_link(ours, targets[0])
    theirs.add_link(targets[0])
    _internals.add_string_event(ours, "late", "k", "v")
    theirs.add_event("late", {"k": "v"})
    assert _links_and_events(ours) == _links_and_events(theirs)
    assert ours.dropped_links == theirs.dropped_links  # type: ignore[attr-defined]
    assert ours.dropped_events == theirs.dropped_events  # type: ignore[attr-defined]


def test_add_link_and_add_string_event_fall_back_for_other_spans() -> None:
    recorded: list[tuple[str, object]] = []

    class Custom(trace.NonRecordingSpan):
        def add_link(self, context: trace.SpanContext, attributes: object = None) -> None:
            recorded.append(("link", context))

        def add_event(self, name: str, attributes: object = None, timestamp: object = None) -> None:
            recorded.append((name, attributes))

    span = Custom(trace.INVALID_SPAN_CONTEXT)
    _internals.add_link(span, trace.INVALID_SPAN_CONTEXT)
    _internals.add_string_event(span, "started", "k", "v")
    assert recorded == [("link", trace.INVALID_SPAN_CONTEXT), ("started", {"k": "v"})]
