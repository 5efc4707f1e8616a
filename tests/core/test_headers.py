"""One header grammar: the token rule and the one-value rule, the same for every reader."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kilostar_otel import KiloStarPropagator, get_request_id
from kilostar_otel._headers import header_lines, is_token, one_value
from kilostar_otel.ids import new_request_id
from kilostar_otel.integrations._policy import RequestIdPolicy


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ("req-1", "req-1"),
        (" req-1\t", "req-1"),
        (["req-1"], "req-1"),
        (["req-1", "req-1"], "req-1"),
        (["req-1, req-1"], "req-1"),
        ([b"req-1"], "req-1"),
        (("req-1",), "req-1"),
        (["req-1", "req-2"], None),
        (["req-1,req-2"], None),
        ([], None),
        (None, None),
        (42, None),
        ([42], None),
    ],
)
def test_one_value(values: Any, expected: str | None) -> None:
    assert one_value(values) == expected


def test_header_lines_never_look_inside_foreign_objects() -> None:
    class Hostile(list[str]):
        def __iter__(self) -> Any:
            raise RuntimeError("hostile")

    assert header_lines(Hostile(["a"])) == []
    assert header_lines(["a", b"b", 3, None]) == ["a", "b"]


@pytest.mark.parametrize("name", ["X-Request-Id", "x-correlation-id", "a!#$%&'*+-.^_`|~9"])
def test_tokens(name: str) -> None:
    assert is_token(name)


@pytest.mark.parametrize("name", ["", "x request", "x:y", "é", "a\r\nb", None, b"x"])
def test_not_tokens(name: object) -> None:
    assert not is_token(name)


def test_the_propagator_and_the_middlewares_reject_the_same_header_names() -> None:
    for name in ["bad name", "x:y", ""]:
        with pytest.raises(ValueError):
            KiloStarPropagator(header_name=name)
        with pytest.raises(ValueError):
            RequestIdPolicy(name, new_request_id, lambda v: True, True)


LINES = st.lists(st.sampled_from(["req-a", "req-b", " req-a", "req-a,req-a", "req-a, req-b", ""]))


@given(LINES)
def test_the_propagator_and_the_middlewares_read_the_same_one_value(lines: list[str]) -> None:
    policy = RequestIdPolicy("x-request-id", new_request_id, lambda v: True, True)
    from_middleware = policy.incoming(lines, [])
    from_propagator = get_request_id(KiloStarPropagator().extract({"x-request-id": lines}))
    assert (from_middleware or "") == from_propagator
