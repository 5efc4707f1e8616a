"""The never-raise guard: counts, logs the type once, and re-raises own errors in strict mode."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry import context

from kilostar_otel import KiloStarPropagator, _guard
from kilostar_otel._idcontext import request_id_from
from kilostar_otel.sampling import LinkAwareSampler
from tests.conftest import Swallowed


def test_the_test_suite_runs_in_strict_mode() -> None:
    assert _guard.is_strict()


@pytest.fixture
def strict() -> Iterator[None]:
    previous = _guard.set_strict(True)
    yield
    _guard.set_strict(previous)


def _own_error() -> None:
    try:
        request_id_from("not a context")  # type: ignore[arg-type]
    except Exception as exc:
        _guard.internal_error("test.own", exc)


def test_an_own_error_is_re_raised_in_strict_mode(strict: None) -> None:
    with pytest.raises(AttributeError):
        _own_error()


def test_a_foreign_error_is_swallowed_even_in_strict_mode(strict: None) -> None:
    class Getter:
        def get(self, carrier: object, key: str) -> None:
            raise RuntimeError("a foreign getter fails")

        def keys(self, carrier: object) -> list[str]:
            return []

    before = _guard.error_counts().get("KiloStarPropagator.extract", 0)
    ctx = context.Context()
    assert KiloStarPropagator().extract({}, ctx, Getter()) is ctx  # type: ignore[arg-type]
    assert _guard.error_counts()["KiloStarPropagator.extract"] == before + 1


def test_lenient_mode_counts_and_logs_the_type_once(
    swallowed: Swallowed, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="kilostar_otel"):
        _own_error()
        _own_error()
    assert swallowed.count("test.own") == 2
    lines = [r.getMessage() for r in caplog.records if "test.own" in r.getMessage()]
    assert len(lines) <= 1  # once per process and hook (an earlier test may have logged it)
    for line in lines:
        assert "AttributeError" in line and "not a context" not in line


def test_the_sampler_falls_back_to_its_root_on_a_malformed_link(swallowed: Swallowed) -> None:
    class Root(LinkAwareSampler):
        def should_sample(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            return "root decided"

    result = LinkAwareSampler(Root()).should_sample(None, 1, "s", links=[object()])  # type: ignore[list-item]
    assert result == "root decided"
    assert swallowed.count("LinkAwareSampler.should_sample") == 1
