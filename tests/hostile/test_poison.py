"""Poison spans never lose their batch: text that cannot be encoded, a 25 MiB attribute, a
client-sent lone surrogate in a workflow's error; a workflow root ends whatever its exception does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kilostar_otel import workflow
from kilostar_otel._names import SPAN_CUT_ATTRIBUTE
from kilostar_otel._poison import CUT_MARK
from kilostar_otel.configure import Telemetry, configure
from kilostar_otel.viewer import OtlpReceiver
from tests.conftest import Spans

PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture(params=PROTOCOLS)
def telemetry(request: pytest.FixtureRequest, receiver: OtlpReceiver) -> Iterator[Telemetry]:
    protocol = request.param
    endpoint = "http://" + receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    handle = configure(
        set_global=False,
        endpoint=endpoint,
        protocol=protocol,
        schedule_delay_millis=60_000,
        max_export_batch_size=1000,
        timeout=5,
    )
    yield handle
    handle.shutdown(5000)


def _one_poison_in_a_thousand(telemetry: Telemetry, poison: Any) -> None:
    tracer = telemetry.get_tracer("poison")
    for n in range(999):
        if n == 500:
            poison(tracer)
        tracer.start_span(f"ok-{n}").end()
    assert telemetry.force_flush(30_000) is True


@pytest.mark.parametrize("where", ["span name", "event name", "status", "attribute"])
def test_a_lone_surrogate_loses_nothing(
    telemetry: Telemetry, receiver: OtlpReceiver, where: str
) -> None:
    def poison(tracer: Any) -> None:
        span = tracer.start_span("bad\ud800" if where == "span name" else "bad")
        if where == "event name":
            span.add_event("event\ud800")
        if where == "attribute":
            span.set_attribute("value", "x\udfff")
        if where == "status":
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, "client said \ud800"))
        span.end()

    _one_poison_in_a_thousand(telemetry, poison)
    spans = receiver.wait_for_spans(1000)
    assert len(spans) == 1000
    (bad,) = [s for s in spans if s.name.startswith("bad")]
    assert bad.attributes[SPAN_CUT_ATTRIBUTE] == "encoding"
    assert telemetry.cut_spans == 1 and telemetry.failed_spans == 0
    if where == "span name":
        assert bad.name == "bad\\ud800"  # escaped as text, readable
    if where == "attribute":
        assert bad.attributes["value"] == "x\\udfff"


def test_a_25_mib_attribute_is_cut_and_the_batch_delivered(
    telemetry: Telemetry, receiver: OtlpReceiver
) -> None:
    def poison(tracer: Any) -> None:
        span = tracer.start_span("huge")
        span.set_attribute("payload", "y" * (25 * 1024 * 1024))
        span.set_attribute("small", "kept")
        span.end()

    _one_poison_in_a_thousand(telemetry, poison)
    spans = receiver.wait_for_spans(1000)
    assert len(spans) == 1000
    (huge,) = [s for s in spans if s.name == "huge"]
    assert huge.attributes[SPAN_CUT_ATTRIBUTE] == "size"
    assert huge.attributes["small"] == "kept"
    payload = huge.attributes["payload"]
    assert payload.endswith(CUT_MARK) and len(payload) < 1024 * 1024
    assert telemetry.cut_spans == 1


def test_a_batch_refused_as_too_large_is_split_and_sent(receiver: OtlpReceiver) -> None:
    # 40 spans of 900 KiB (each under max_span_bytes) make one 36 MiB request: the receiver
    # refuses bodies over 20 MiB with 413 at once; each half fits.
    telemetry = configure(
        set_global=False,
        endpoint=receiver.http_endpoint,
        protocol="http/protobuf",
        schedule_delay_millis=60_000,
        max_export_batch_size=40,
    )
    tracer = telemetry.get_tracer("split")
    for n in range(40):
        span = tracer.start_span(f"large-{n}")
        span.set_attribute("payload", "z" * 900 * 1024)
        span.end()
    assert telemetry.force_flush(30_000) is True
    assert len(receiver.wait_for_spans(40, timeout=30)) == 40
    assert telemetry._pipeline is not None and telemetry._pipeline.split == 1
    assert (telemetry.delivered_spans, telemetry.failed_spans) == (40, 0)
    telemetry.shutdown(5000)


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ raised")


def test_the_root_ends_when_the_exceptions_str_raises(spans: Spans) -> None:
    with pytest.raises(UnprintableError):
        with workflow("sync"):
            raise UnprintableError

    @workflow("decorated")
    def decorated() -> None:
        raise UnprintableError

    with pytest.raises(UnprintableError):
        decorated()
    for name in ("sync", "decorated"):
        root = spans.named(f"invoke_workflow {name}")
        assert root.end_time is not None
        assert root.status.description == "UnprintableError: <str() failed>"


async def test_the_root_ends_when_the_exceptions_str_raises_async(spans: Spans) -> None:
    with pytest.raises(UnprintableError):
        async with workflow("async"):
            raise UnprintableError
    assert spans.named("invoke_workflow async").end_time is not None


def test_a_client_sent_surrogate_in_a_workflow_error_loses_nothing(
    telemetry: Telemetry, receiver: OtlpReceiver, serve_asgi: Any
) -> None:
    tracer = telemetry.get_tracer("app")

    async def plan(request: Request) -> JSONResponse:
        value = json.loads(await request.body())["goal"]  # JSON may carry "\ud800"
        try:
            with workflow("plan", tracer_provider=telemetry.tracer_provider):
                with tracer.start_as_current_span("step"):
                    pass
                raise ValueError(f"cannot plan {value}")
        except ValueError:
            return JSONResponse({"ok": False}, status_code=422)

    server = serve_asgi(Starlette(routes=[Route("/plan", plan, methods=["POST"])]))
    response = httpx.post(server.url + "/plan", content=b'{"goal": "\\ud800"}', timeout=10)
    assert response.status_code == 422
    assert telemetry.force_flush(30_000) is True
    spans = receiver.wait_for_spans(2)
    root = next(s for s in spans if s.name == "invoke_workflow plan")
    assert root.status_message == "ValueError: cannot plan \\ud800"
    assert {s.name for s in spans} == {"invoke_workflow plan", "step"}
    assert telemetry.failed_spans == 0
