"""KiloStarPropagator: the request id on the wire, beside W3C traceparent and baggage."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import kilostar_otel
from kilostar_otel import KiloStarPropagator, get_request_id, request_id_scope

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def restore_global_propagator() -> Iterator[None]:
    before = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(before)


def test_inject_writes_the_header_and_the_baggage_entry() -> None:
    carrier: dict[str, str] = {}
    with request_id_scope("req-inject"):
        KiloStarPropagator().inject(carrier)
    assert carrier == {"x-request-id": "req-inject", "baggage": "kilostar.request_id=req-inject"}


def test_inject_writes_nothing_when_unbound() -> None:
    carrier: dict[str, str] = {}
    KiloStarPropagator().inject(carrier)
    assert carrier == {}


@pytest.mark.parametrize("name", ["X-Request-Id", "x-request-id", "X-REQUEST-ID", "x-ReQuEsT-iD"])
def test_extract_reads_the_header_in_any_case(name: str) -> None:
    ctx = KiloStarPropagator().extract({name: "req-any-case"})
    assert get_request_id(ctx) == "req-any-case"
    assert baggage.get_baggage("kilostar.request_id", ctx) == "req-any-case"


def test_extract_reads_the_baggage_entry_when_the_header_is_absent() -> None:
    ctx = KiloStarPropagator().extract({"baggage": "a=1, kilostar.request_id = req-bag ;p=1"})
    assert get_request_id(ctx) == "req-bag"


def test_header_wins_by_default_and_baggage_wins_when_configured() -> None:
    carrier = {"x-request-id": "req-header", "baggage": "kilostar.request_id=req-baggage"}
    assert get_request_id(KiloStarPropagator().extract(carrier)) == "req-header"
    by_baggage = KiloStarPropagator(prefer="baggage").extract(carrier)
    assert get_request_id(by_baggage) == "req-baggage"


def test_an_invalid_header_falls_back_to_valid_baggage() -> None:
    carrier = {"x-request-id": "bad id", "baggage": "kilostar.request_id=req-ok"}
    assert get_request_id(KiloStarPropagator().extract(carrier)) == "req-ok"


@pytest.mark.parametrize(
    "carrier",
    [
        {"x-request-id": ""},
        {"x-request-id": "a\r\nSet-Cookie: x=1"},
        {"x-request-id": "x" * 201},
        {"x-request-id": "réquest"},
        {"x-request-id": ["req-a", "req-b"]},  # disagreeing duplicates are ambiguous
        {"baggage": "kilostar.request_id=bad%0D%0Aid"},
        {"baggage": "kilostar.request_id=%FF%FE"},
    ],
)
def test_invalid_ids_count_as_absent(carrier: dict[str, object]) -> None:
    ctx = KiloStarPropagator().extract(carrier)
    assert get_request_id(ctx) == ""


def test_identical_duplicate_headers_count_once() -> None:
    ctx = KiloStarPropagator().extract({"x-request-id": ["req-dup", " req-dup "]})
    assert get_request_id(ctx) == "req-dup"


def test_fields_lists_what_inject_writes() -> None:
    assert KiloStarPropagator().fields == {"x-request-id", "baggage"}
    assert KiloStarPropagator(inject_baggage=False, header_name="X-Correlation-Id").fields == {
        "x-correlation-id"
    }


@pytest.mark.parametrize(
    "kwargs", [{"prefer": "cookie"}, {"header_name": "bad header"}, {"header_name": ""}]
)
def test_bad_configuration_is_a_clear_error_at_construction(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"prefer|header_name"):
        KiloStarPropagator(**kwargs)  # type: ignore[arg-type]


def test_an_invalid_bound_id_is_never_written_as_the_request_id_header() -> None:
    carrier: dict[str, str] = {}
    with request_id_scope("bad id\r\nx"):
        KiloStarPropagator().inject(carrier)
    # Baggage is carried as it is, percent-encoded (header-safe); the receiver's policy rejects it.
    assert carrier == {"baggage": "kilostar.request_id=bad%20id%0D%0Ax"}
    assert get_request_id(KiloStarPropagator().extract(carrier)) == ""


class _Exploding(dict[str, str]):
    def get(self, key: object, default: object = None) -> str:  # type: ignore[override]
        raise RuntimeError("hostile carrier")

    def keys(self):  # type: ignore[no-untyped-def,override]
        raise RuntimeError("hostile carrier")

    def __setitem__(self, key: str, value: str) -> None:
        raise RuntimeError("hostile carrier")


def test_a_hostile_carrier_never_makes_extract_or_inject_raise() -> None:
    propagator = KiloStarPropagator()
    base = context.get_current()
    assert propagator.extract(_Exploding(), base) is base
    with request_id_scope("req-x"):
        propagator.inject(_Exploding())


ORDERS = list(
    itertools.permutations(
        [TraceContextTextMapPropagator(), W3CBaggagePropagator(), KiloStarPropagator()]
    )
)


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "+".join(type(p).__name__[:5] for p in o))
def test_in_any_composite_order_inject_writes_one_consistent_baggage_header(
    order: tuple[TextMapPropagator, ...], tracer: trace.Tracer
) -> None:
    composite = CompositePropagator(list(order))
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with request_id_scope("req-order"), tracer.start_as_current_span("client") as span:
            carrier: list[tuple[str, str]] = []
            composite.inject(carrier, setter=_ListSetter())
            expected_traceparent: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(expected_traceparent)
    finally:
        context.detach(token)
    headers = dict(carrier)
    # One logical header each (a dict carrier keeps the last write; all writes agree).
    assert {v for k, v in carrier if k == "baggage"} == {headers["baggage"]}
    assert set(headers["baggage"].split(",")) == {"tenant=acme", "kilostar.request_id=req-order"}
    assert headers["x-request-id"] == "req-order"
    assert headers["traceparent"] == expected_traceparent["traceparent"]
    assert headers["traceparent"].split("-")[2] == f"{span.get_span_context().span_id:016x}"


class _ListSetter:
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "+".join(type(p).__name__[:5] for p in o))
def test_in_any_composite_order_extract_finds_the_request_id(
    order: tuple[TextMapPropagator, ...],
) -> None:
    carrier = {"traceparent": TRACEPARENT, "baggage": "tenant=acme", "X-Request-Id": "req-in"}
    ctx = CompositePropagator(list(order)).extract(carrier)
    assert get_request_id(ctx) == "req-in"
    assert baggage.get_baggage("tenant", ctx) == "acme"
    assert f"{trace.get_current_span(ctx).get_span_context().trace_id:032x}" == TRACEPARENT[3:35]


def test_set_global_inject_and_extract(restore_global_propagator: None) -> None:
    kilostar_otel.set_global()
    with request_id_scope("req-global"):
        headers = kilostar_otel.inject({})
    assert headers["x-request-id"] == "req-global"
    assert "kilostar.request_id=req-global" in headers["baggage"]
    assert get_request_id(kilostar_otel.extract(headers)) == "req-global"


def test_round_trip_preserves_every_baggage_entry(restore_global_propagator: None) -> None:
    kilostar_otel.set_global()
    token = context.attach(baggage.set_baggage("note", "a b,c;d=é+"))
    try:
        with request_id_scope("req+b64/=="):
            headers = kilostar_otel.inject({})
    finally:
        context.detach(token)
    assert all(v.isascii() and v.isprintable() for v in headers.values())
    ctx = kilostar_otel.extract(headers)
    assert get_request_id(ctx) == "req+b64/=="
    assert baggage.get_baggage("note", ctx) == "a b,c;d=é+"


def _run_fresh(code: str, **env: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_otel_propagators_env_loads_the_entry_point_in_a_fresh_interpreter() -> None:
    seen = _run_fresh(
        """
        import json
        from opentelemetry import propagate, context, baggage
        from opentelemetry.propagators.composite import CompositePropagator
        import kilostar_otel
        names = [type(p).__name__ for p in propagate.get_global_textmap()._propagators]
        ctx = propagate.extract({"x-request-id": "req-env"})
        with kilostar_otel.request_id_scope("req-out"):
            out = {}
            propagate.inject(out)
        print(json.dumps({"names": names, "rid": kilostar_otel.get_request_id(ctx), "out": out}))
        """,
        OTEL_PROPAGATORS="tracecontext,baggage,kilostar",
    )
    assert seen["names"] == [
        "TraceContextTextMapPropagator",
        "W3CBaggagePropagator",
        "KiloStarPropagator",
    ]
    assert seen["rid"] == "req-env"
    assert seen["out"] == {"baggage": "kilostar.request_id=req-out", "x-request-id": "req-out"}


def test_the_hardened_w3c_propagators_load_by_name() -> None:
    seen = _run_fresh(
        """
        import json
        from opentelemetry import propagate
        names = [type(p).__name__ for p in propagate.get_global_textmap()._propagators]
        print(json.dumps({"names": names}))
        """,
        OTEL_PROPAGATORS="kilostar_tracecontext,kilostar_baggage,kilostar",
    )
    assert seen["names"] == ["TraceContextPropagator", "BaggagePropagator", "KiloStarPropagator"]


def test_importing_kilostar_first_with_the_env_var_set_has_no_import_cycle() -> None:
    seen = _run_fresh(
        """
        import json
        import kilostar_otel
        from opentelemetry import propagate
        names = [type(p).__name__ for p in propagate.get_global_textmap()._propagators]
        print(json.dumps({"names": names}))
        """,
        OTEL_PROPAGATORS="kilostar",
    )
    assert seen["names"] == ["KiloStarPropagator"]


def test_importing_kilostar_is_cheap() -> None:
    seen = _run_fresh(
        """
        import json, sys
        import kilostar_otel
        heavy = [m for m in sys.modules if m.startswith((
            "grpc", "google.protobuf", "opentelemetry.exporter", "kilostar_otel.integrations",
            "kilostar_otel.cli", "kilostar_otel.viewer", "starlette", "httpx", "ray", "requests",
        ))]
        print(json.dumps({"heavy": heavy}))
        """
    )
    assert seen["heavy"] == []
