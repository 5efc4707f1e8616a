"""Id generation and the request-id policy."""

from __future__ import annotations

import re

import pytest

from kilostar_otel import ids, new_trace_id
from kilostar_otel.ids import REQUEST_ID_MAX_LENGTH, is_valid_request_id, is_valid_trace_id


def test_new_trace_id_is_32_lowercase_hex_and_valid_w3c() -> None:
    seen = {new_trace_id() for _ in range(1000)}
    assert len(seen) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) and is_valid_trace_id(t) for t in seen)


def test_new_trace_id_never_returns_all_zeros(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([bytes(16), bytes(16), bytes(range(16))])
    monkeypatch.setattr(ids.os, "urandom", lambda n: next(draws))
    assert new_trace_id() == bytes(range(16)).hex()


@pytest.mark.parametrize(
    "value",
    [
        "req-0123456789abcdef0123456789abcdef",
        "3fa85f64-5717-4562-b3fc-2c963f66afa6",  # UUID
        "7d1f3b5e9c8a1234-SJC",  # Cloudflare CF-Ray
        "0zxV+XAAAAABKMMOjBv2NT4TY6SQVjC0zV1NURURHRTA2MTk=",  # Azure X-Azure-Ref (base64)
        "1-5759e988-bd862e3fe1be46a994272793",  # AWS style
        "host.example:1234",
        "a",
        "x" * REQUEST_ID_MAX_LENGTH,
    ],
)
def test_policy_admits_common_request_ids(value: str) -> None:
    assert is_valid_request_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x" * (REQUEST_ID_MAX_LENGTH + 1),
        "req-1\r\nSet-Cookie: a=b",
        "req 1",
        "req,1",
        "req;1",
        'req"1',
        "réq-1",
        "req-\x00",
        "req-1\n",
        None,
        123,
        b"req-1",
        ["req-1"],
    ],
)
def test_policy_rejects_everything_else(value: object) -> None:
    assert not is_valid_request_id(value)


@pytest.mark.parametrize("value", ["0" * 32, "A" * 32, "a" * 31, "a" * 33, "g" * 32, None])
def test_trace_id_validation(value: object) -> None:
    assert not is_valid_trace_id(value)
