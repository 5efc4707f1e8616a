"""Our propagators read an ASGI scope through OpenTelemetry's ``asgi_getter`` without calling it.

``ASGIGetter.get`` decodes every header name on every call, and the three propagators ask for
four headers per request. For the getter itself (not a subclass) they scan the scope once per
header with ASCII names compared as bytes; these tests hold that to exactly what the getter
returns (or raises), and whole extractions to what the getter-driven path gives.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.baggage import get_all
from opentelemetry.context import Context
from opentelemetry.instrumentation.asgi import ASGIGetter, asgi_getter
from opentelemetry.trace import get_current_span

from kilostar_otel import propagation
from kilostar_otel._idcontext import request_id_from

# Drawn bytes that are not UTF-8 go through unicode_escape, in OpenTelemetry's getter and in ours
# alike, and a backslash before a letter there warns; the warning is the codec's, not a finding.
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")

NAMES = ["traceparent", "tracestate", "baggage", "x-request-id"]
NAME_BYTES = st.sampled_from(
    [
        b"traceparent",
        b"TraceParent",
        b"tracestate",
        b"baggage",
        b"BAGGAGE",
        b"x-request-id",
        b"X-Request-ID",
        b"host",
        "x-request-\u0130d".encode(),  # a dotted capital I: lower() is not ASCII "i"
        "baggage\u212a".encode(),  # the Kelvin sign lower-cases to an ASCII "k"
        b"bagg\xe4ge",  # not UTF-8: decoded with unicode_escape
        b"\xff\xfe",
    ]
)
VALUE_BYTES = st.sampled_from(
    [
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"kilostar.request_id=req-1,other=2",
        b"req-abc",
        b"caf\xc3\xa9",  # UTF-8
        b"caf\xe9",  # latin-1: not UTF-8
        b"",
    ]
) | st.binary(max_size=12)
HEADERS = st.lists(st.tuples(NAME_BYTES, VALUE_BYTES), max_size=6)


class SubclassedGetter(ASGIGetter):
    """A subclass: read through its own ``get`` (the general path), never the shortcut."""


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return ("value", fn(*args))
    except Exception as exc:
        return ("raised", type(exc))


@given(HEADERS, st.sampled_from(NAMES))
def test_the_shortcut_returns_what_asgi_getter_returns(
    headers: list[tuple[bytes, bytes]], name: str
) -> None:
    scope = {"type": "http", "headers": headers}
    assert _outcome(propagation._asgi_lines, scope, name, asgi_getter) == _outcome(
        asgi_getter.get, scope, name
    )


@pytest.mark.parametrize(
    "scope",
    [
        {"type": "http"},
        {"headers": [(b"x-request-id", b"\x80\\")]},  # neither UTF-8 nor unicode_escape
        {"headers": None},
        {"headers": []},
        {"headers": [("x-request-id", "str, not bytes")]},
        {"headers": [(b"x-request-id",)]},
        {"headers": [(b"x-request-id", b"a", b"b")]},
        {"headers": [(b"x-request-id", None)]},
        {"headers": [(1, b"a")]},
        {"headers": "not a list"},
    ],
)
def test_malformed_scopes_give_the_getters_outcome(scope: dict[str, Any]) -> None:
    for name in NAMES:
        assert _outcome(propagation._asgi_lines, scope, name, asgi_getter) == _outcome(
            asgi_getter.get, scope, name
        )


def test_only_the_getter_itself_takes_the_shortcut() -> None:
    assert propagation._reads_asgi_scope(asgi_getter)
    assert not propagation._reads_asgi_scope(SubclassedGetter())
    assert not propagation._reads_asgi_scope(propagation.default_getter)


@given(HEADERS)
def test_extraction_through_the_shortcut_equals_extraction_through_the_getter(
    headers: list[tuple[bytes, bytes]],
) -> None:
    scope = {"type": "http", "headers": headers}
    propagator = propagation.default_propagator()
    fast = propagator.extract(scope, Context(), asgi_getter)
    slow = propagator.extract(scope, Context(), SubclassedGetter())
    assert request_id_from(fast) == request_id_from(slow)
    assert get_all(fast) == get_all(slow)
    assert get_current_span(fast).get_span_context() == get_current_span(slow).get_span_context()


def test_a_request_id_in_any_case_is_read_through_the_shortcut() -> None:
    scope = {
        "type": "http",
        "headers": [
            (b"X-Request-ID", b"req-shortcut"),
            (b"TraceParent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ],
    }
    extracted = propagation.default_propagator().extract(scope, Context(), asgi_getter)
    assert request_id_from(extracted) == "req-shortcut"
    assert (
        get_current_span(extracted).get_span_context().trace_id
        == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    )
