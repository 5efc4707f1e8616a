"""Property-based: no carrier makes extract raise; inject writes only safe, bounded headers.

CI runs the default profile (300 examples); the thorough run (100,000 examples) is
``.venv/bin/pytest tests/hostile/test_properties.py --hypothesis-profile=thorough``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import baggage, context
from opentelemetry.baggage.propagation import W3CBaggagePropagator

from kilostar_otel import KiloStarPropagator, default_propagator, get_request_id
from kilostar_otel._w3c import (
    BAGGAGE_MAX_BYTES,
    BAGGAGE_MAX_MEMBERS,
    parse_baggage,
    parse_traceparent,
    parse_tracestate,
)
from kilostar_otel.context import context_with_request_id
from kilostar_otel.ids import is_valid_request_id

HEADER_NAMES = st.sampled_from(
    [
        "x-request-id",
        "X-Request-Id",
        "X-REQUEST-ID",
        "baggage",
        "Baggage",
        "traceparent",
        "tracestate",
        "other",
    ]
)
# Values past the 8 KiB baggage limit: a random head, then a random piece repeated (drawing 8,000
# characters one by one would make data generation 100 times slower than the test itself).
LONG_TEXT = st.builds(
    lambda head, piece, count: (head + piece * count)[:9000],
    st.text(max_size=40),
    st.text(alphabet="a=,;% ", min_size=1, max_size=12),
    st.integers(700, 9000),
)
ANY_TEXT = st.text(max_size=300) | LONG_TEXT
VALUES: st.SearchStrategy[Any] = (
    ANY_TEXT
    | st.lists(ANY_TEXT, max_size=4)
    | st.none()
    | st.integers()
    | st.binary(max_size=50)
    | st.lists(st.integers() | st.none() | st.binary(max_size=5), max_size=3)
)
CARRIERS = st.dictionaries(HEADER_NAMES | st.text(max_size=20), VALUES, max_size=8)


@given(CARRIERS)
def test_extract_never_raises_and_only_yields_valid_ids(carrier: dict[str, Any]) -> None:
    for propagator in (KiloStarPropagator(), KiloStarPropagator(prefer="baggage")):
        ctx = propagator.extract(carrier)
        request_id = get_request_id(ctx)
        assert request_id == "" or is_valid_request_id(request_id)


@given(CARRIERS)
def test_the_default_composite_extract_never_raises(carrier: dict[str, Any]) -> None:
    default_propagator().extract(carrier)


@given(st.lists(VALUES, max_size=3) | VALUES)
def test_w3c_parsers_never_raise(value: Any) -> None:
    parse_traceparent(value)
    parse_baggage(value)
    parse_tracestate(value if isinstance(value, list) else [value])


def _assert_safe_header(value: str) -> None:
    assert value.isascii()
    assert value.isprintable()
    assert "\r" not in value and "\n" not in value


BAGGAGE_ENTRIES = st.dictionaries(
    st.text(min_size=1, max_size=40) | st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True),
    st.text(max_size=200),
    max_size=200,
)


@given(request_id=st.text(max_size=300), entries=BAGGAGE_ENTRIES)
def test_inject_writes_only_safe_bounded_headers_that_parse_back(
    request_id: str, entries: dict[str, str]
) -> None:
    ctx = context.Context()
    for key, value in entries.items():
        ctx = baggage.set_baggage(key, value, ctx)
    ctx = context_with_request_id(ctx, request_id)
    carrier: dict[str, str] = {}
    default_propagator().inject(carrier, ctx)
    for value in carrier.values():
        _assert_safe_header(value)
    if is_valid_request_id(request_id):
        assert carrier["x-request-id"] == request_id
    else:
        assert "x-request-id" not in carrier
    header = carrier.get("baggage", "")
    assert len(header.encode()) <= BAGGAGE_MAX_BYTES
    assert len([m for m in header.split(",") if m]) <= BAGGAGE_MAX_MEMBERS
    parsed = parse_baggage(header)
    # Every entry of the context's baggage is written, unless a W3C limit left it out, and
    # parses back to the value it had ...
    expected = dict(baggage.get_all(ctx))
    for key, value in parsed.items():
        assert expected[key] == value
    if len(header) < BAGGAGE_MAX_BYTES - 4096 and len(parsed) < BAGGAGE_MAX_MEMBERS:
        assert parsed == expected
    # ... OpenTelemetry's own baggage propagator reads the same entries (it strips whitespace) ...
    theirs = baggage.get_all(W3CBaggagePropagator().extract({"baggage": header}))
    assert {k: str(v) for k, v in theirs.items() if k} == {
        k.strip(): v.strip() for k, v in parsed.items() if k.strip()
    } or not header
    # ... and the request id survives whenever it is valid.
    if is_valid_request_id(request_id):
        assert parsed.get("kilostar.request_id") == request_id


class _Hostile:
    """A header value that raises from everything a parser might call on it."""

    def _boom(self, *args: Any) -> Any:
        raise RuntimeError("hostile value")

    __str__ = __repr__ = __iter__ = __len__ = __eq__ = __hash__ = __getitem__ = _boom  # type: ignore[assignment]
    lower = strip = split = decode = encode = _boom


ANY_KEYS: st.SearchStrategy[Any] = (
    HEADER_NAMES | st.integers() | st.binary(max_size=12) | st.none() | st.tuples(st.integers())
)
ANY_VALUES: st.SearchStrategy[Any] = VALUES | st.builds(_Hostile) | st.lists(st.builds(_Hostile))


@given(st.lists(st.tuples(ANY_KEYS, ANY_VALUES), max_size=8))
def test_extract_never_raises_for_any_keys_or_hostile_values(items: list[tuple[Any, Any]]) -> None:
    carrier: dict[Any, Any] = {}
    for key, value in items:
        carrier[key] = value
    for propagator in (default_propagator(), KiloStarPropagator()):
        request_id = get_request_id(propagator.extract(carrier, context.Context()))
        assert request_id == "" or is_valid_request_id(request_id)
