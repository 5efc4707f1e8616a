"""W3C Trace Context level 2: our TraceContextPropagator against OpenTelemetry's own.

Each case where the two differ is asserted for both, so a test fails if OTel fixes its side (then
the difference claim in the docs must go) or if ours regresses.
"""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kilostar_otel.propagation import TraceContextPropagator, default_propagator

TRACE_A = "12345678901234567890123456789011"
TRACE_B = "12345678901234567890123456789012"
PARENT = "1234567890123456"
TP_A = f"00-{TRACE_A}-{PARENT}-01"
TP_B = f"00-{TRACE_B}-{PARENT}-01"

OURS = TraceContextPropagator()
OTEL = TraceContextTextMapPropagator()


def _parent(propagator: TextMapPropagator, carrier: dict[str, object]) -> SpanContext:
    return trace.get_current_span(propagator.extract(carrier)).get_span_context()


def _state(propagator: TextMapPropagator, tracestate: list[str]) -> dict[str, str]:
    span_context = _parent(propagator, {"traceparent": [TP_A], "tracestate": tracestate})
    assert span_context.is_valid
    return dict(span_context.trace_state)


# -- traceparent ------------------------------------------------------------------------------


def test_repeated_traceparent_lines_restart_the_trace_where_otel_takes_the_first() -> None:
    carrier: dict[str, object] = {"traceparent": [TP_A, TP_B]}
    assert not _parent(OURS, carrier).is_valid
    otel = _parent(OTEL, carrier)
    assert otel.is_valid and f"{otel.trace_id:032x}" == TRACE_A


def test_repeated_identical_traceparent_lines_also_restart() -> None:
    assert not _parent(OURS, {"traceparent": [TP_A, TP_A]}).is_valid


def test_repeated_traceparent_means_a_new_trace_for_the_next_span(tracer: trace.Tracer) -> None:
    ctx = OURS.extract({"traceparent": [TP_A, TP_B], "tracestate": ["foo=1"]})
    with tracer.start_as_current_span("server", context=ctx) as span:
        started = span.get_span_context()
    assert f"{started.trace_id:032x}" not in (TRACE_A, TRACE_B)
    assert started.trace_state == TraceState()


@pytest.mark.parametrize(
    ("header", "valid"),
    [
        (TP_A, True),
        (f" \t{TP_A} \t", True),
        (f"cc-{TRACE_A}-{PARENT}-01", True),
        (f"cc-{TRACE_A}-{PARENT}-01-what-the-future-will-be-like", True),
        (f"cc-{TRACE_A}-{PARENT}-01.what-the-future-will-be-like", False),
        (f"00-{TRACE_A}-{PARENT}-01-extra", False),
        (f"00-{TRACE_A}-{PARENT}-01.", False),
        (f"ff-{TRACE_A}-{PARENT}-01", False),
        (f"00-{'0' * 32}-{PARENT}-01", False),
        (f"00-{TRACE_A}-{'0' * 16}-01", False),
        ("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", False),
        (f"000-{TRACE_A}-{PARENT}-01", False),
        (f"0-{TRACE_A}-{PARENT}-01", False),
        (f"00-{TRACE_A}-{PARENT}-1", False),
        (f"00-{TRACE_A}-{PARENT}-001", False),
        (f"{TP_A},{TP_B}", False),
        ("", False),
        ("x" * 10_000, False),
    ],
)
def test_traceparent_cases_of_the_w3c_suite(header: str, valid: bool) -> None:
    span_context = _parent(OURS, {"traceparent": header})
    assert span_context.is_valid is valid
    if valid:
        assert f"{span_context.trace_id:032x}" == TRACE_A
        assert span_context.is_remote


def test_traceparent_header_name_is_matched_in_any_case() -> None:
    for name in ("TraceParent", "TRACEPARENT", "tRaCePaReNt"):
        span_context = _parent(OURS, {name: TP_A, "TraceState": "foo=1"})
        assert f"{span_context.trace_id:032x}" == TRACE_A
        assert dict(span_context.trace_state) == {"foo": "1"}


def test_tracestate_without_a_valid_traceparent_is_not_read() -> None:
    assert not _parent(OURS, {"tracestate": "foo=1"}).is_valid
    assert not _parent(OURS, {"traceparent": "garbage", "tracestate": "foo=1"}).is_valid


# -- tracestate -------------------------------------------------------------------------------


def test_a_duplicated_key_is_inherited_where_otel_drops_the_whole_header() -> None:
    assert _state(OURS, ["foo=1,bar=2,foo=3"]) == {"foo": "1", "bar": "2"}
    assert _state(OURS, ["foo=1", "foo=2"]) == {"foo": "1"}
    assert _state(OTEL, ["foo=1,bar=2,foo=3"]) == {}


@pytest.mark.parametrize(
    "key",
    [
        "foo@bar@baz",  # several '@'
        "foo@",  # '@' at the end
        "t" * 242 + "@v",  # tenant part beyond level 1's 241 characters
        "t@" + "v" * 15,  # system part beyond level 1's 14 characters
        "1abc",  # leading digit without '@'
        "a" * 100 + "@" + "b" * 155,  # 256 characters with '@'
    ],
)
def test_level2_keys_are_accepted_where_otel_drops_the_whole_header(key: str) -> None:
    assert _state(OURS, [f"foo=1,{key}=v"]) == {"foo": "1", key: "v"}
    assert _state(OTEL, [f"foo=1,{key}=v"]) == {}


def test_the_256_character_limit_holds_for_both() -> None:
    assert _state(OURS, ["foo=1", "z" * 256 + "=1"]) == {"foo": "1", "z" * 256: "1"}
    assert _state(OURS, ["foo=1", "z" * 257 + "=1"]) == {}
    assert _state(OURS, ["foo=1", "a" * 100 + "@" + "b" * 156 + "=1"]) == {}
    assert _state(OTEL, ["foo=1", "z" * 257 + "=1"]) == {}


@pytest.mark.parametrize(
    "key", ["z" * 257, "@foo", "FOO", "foo.bar", "foo bar", "foo ", "", "_a", "é"]
)
def test_an_invalid_key_discards_the_whole_header(key: str) -> None:
    assert _state(OURS, [f"foo=1,{key}=v,bar=2"]) == {}
    assert _state(OURS, ["foo=1", f"{key}=v"]) == {}


@pytest.mark.parametrize(
    "member", ["foo=bar=baz", "foo=", "foo", "k=" + "x" * 257, "k=bad\x01", "k=\x7f", "k=é", "k= "]
)
def test_an_invalid_value_discards_the_whole_header(member: str) -> None:
    assert _state(OURS, [f"foo=1,{member},bar=2"]) == {}
    assert _state(OURS, [member]) == {}


def test_the_w3c_suite_value_cases() -> None:
    assert _state(OURS, ["foo=bar=baz"]) == {}
    assert _state(OURS, ["foo=,bar=3"]) == {}


def test_empty_members_and_lines_are_not_invalid() -> None:
    assert _state(OURS, [",foo=1,, \t ,bar=2,", ""]) == {"foo": "1", "bar": "2"}
    assert _state(OURS, ["", " "]) == {}


def test_all_allowed_characters_and_ows_survive() -> None:
    key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/@"
    value = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",=")
    assert _state(OURS, [f" \t{key}={value} \t, \tbar=2"]) == {key: value, "bar": "2"}


def test_multiple_tracestate_lines_combine_in_order() -> None:
    state = _state(OURS, ["foo=1,bar=2", "", "rojo=1,congo=2", "baz=3"])
    assert list(state.items()) == [
        ("foo", "1"),
        ("bar", "2"),
        ("rojo", "1"),
        ("congo", "2"),
        ("baz", "3"),
    ]


def test_32_members_are_kept_and_33_discard_the_whole_header() -> None:
    members = [f"bar{i:02d}={i:02d}" for i in range(1, 34)]
    assert len(_state(OURS, [",".join(members[:32])])) == 32
    assert _state(OURS, [",".join(members[:10]), ",".join(members[10:])]) == {}
    assert _state(OTEL, [",".join(members)]) == {}


def test_repeated_members_count_toward_the_32() -> None:
    assert _state(OURS, [",".join(["foo=1"] * 32)]) == {"foo": "1"}
    assert _state(OURS, [",".join(["foo=1"] * 33)]) == {}


def test_an_overlong_header_is_discarded_without_parsing() -> None:
    assert _state(OURS, ["foo=1" + " " * 20_000]) == {}


def test_oversized_tracestate_loses_large_members_first() -> None:
    big = "b" * 200
    members = [f"k{i}=v{i}" for i in range(20)]
    state = _state(OURS, [f"big={big}", *members, f"huge={'h' * 250}"])
    # Over 512 characters: the last large (>128) member goes first, and that is enough here.
    assert list(state) == ["big", *(f"k{i}" for i in range(20))]
    three_big = _state(OURS, [f"a={big},b={big},c={big}", *members])
    assert list(three_big) == ["a", *(f"k{i}" for i in range(20))]


# -- inject and round trip --------------------------------------------------------------------


def test_level2_tracestate_survives_extract_child_span_and_inject(tracer: trace.Tracer) -> None:
    level2 = "t@" + "v" * 15
    ctx = OURS.extract({"traceparent": TP_A, "tracestate": f"{level2}=x,foo=1"})
    with tracer.start_as_current_span("client", context=ctx) as span:
        carrier: dict[str, str] = {}
        OURS.inject(carrier)
    child = span.get_span_context()
    assert carrier["traceparent"] == f"00-{TRACE_A}-{child.span_id:016x}-01"
    assert carrier["tracestate"] == f"{level2}=x,foo=1"
    again = _parent(OURS, dict(carrier))
    assert (again.trace_id, again.span_id) == (child.trace_id, child.span_id)
    assert dict(again.trace_state) == {level2: "x", "foo": "1"}


def test_inject_zeroes_flags_that_level_2_does_not_define() -> None:
    parent = SpanContext(int(TRACE_A, 16), int(PARENT, 16), True, TraceFlags(0xFF))
    carrier: dict[str, str] = {}
    OURS.inject(carrier, trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    assert carrier == {"traceparent": f"00-{TRACE_A}-{PARENT}-03"}


def test_inject_without_a_span_writes_nothing() -> None:
    carrier: dict[str, str] = {}
    OURS.inject(carrier, Context())
    assert carrier == {}


class _Hostile:
    def get(self, carrier: object, key: str) -> list[str]:
        raise RuntimeError("boom")

    def keys(self, carrier: object) -> list[str]:
        raise RuntimeError("boom")


def test_a_hostile_getter_never_makes_extract_raise() -> None:
    base = Context()
    assert OURS.extract({}, base, getter=_Hostile()) is base  # type: ignore[arg-type]


def test_default_propagator_uses_our_trace_context() -> None:
    composite = default_propagator()
    kinds = [type(p) for p in composite._propagators]  # type: ignore[attr-defined]
    assert kinds[0] is TraceContextPropagator
    ctx = composite.extract({"traceparent": [TP_A, TP_B], "x-request-id": "req-1"})
    assert not trace.get_current_span(ctx).get_span_context().is_valid
