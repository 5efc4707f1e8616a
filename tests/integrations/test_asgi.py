"""RequestIdMiddleware (ASGI) under a real uvicorn server with real Starlette/FastAPI apps."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect

import kilostar_otel
from kilostar_otel import get_request_id
from kilostar_otel.integrations.asgi import RequestIdMiddleware

from .conftest import AsgiServer, LogCapture, wait_until

GENERATED = re.compile(r"req-[0-9a-f]{32}")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
log = logging.getLogger("tests.asgi")


async def whoami(request: Request) -> JSONResponse:
    log.info("handling %s", request.url.path)
    return JSONResponse(
        {
            "request_id": get_request_id(),
            "baggage": baggage.get_baggage("kilostar.request_id"),
            "header": request.headers.get("x-request-id"),
            "baggage_header": request.headers.get("baggage"),
        }
    )


def starlette_app(*routes: Route, **middleware_options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/", whoami), *routes],
        middleware=[Middleware(RequestIdMiddleware, **middleware_options)],
    )


@pytest.fixture
def server(serve_asgi: Callable[..., AsgiServer]) -> AsgiServer:
    return serve_asgi(starlette_app())


# -- the id: taken, generated, echoed ---------------------------------------------------------


def test_a_missing_id_is_generated_bound_and_echoed(server: AsgiServer) -> None:
    response = httpx.get(server.url)
    seen = response.json()
    assert response.status_code == 200
    assert GENERATED.fullmatch(seen["request_id"])
    assert response.headers.get_list("x-request-id") == [seen["request_id"]]
    assert seen["baggage"] == seen["request_id"]


def test_a_valid_incoming_id_is_kept(server: AsgiServer) -> None:
    response = httpx.get(server.url, headers={"X-Request-Id": "req-from-client"})
    assert response.json()["request_id"] == "req-from-client"
    assert response.headers["x-request-id"] == "req-from-client"


def test_a_valid_baggage_id_is_used_when_there_is_no_header(server: AsgiServer) -> None:
    response = httpx.get(server.url, headers={"baggage": "a=1,kilostar.request_id=req-bag"})
    assert response.json()["request_id"] == "req-bag"
    assert response.headers["x-request-id"] == "req-bag"


def test_each_request_gets_its_own_generated_id(server: AsgiServer) -> None:
    with httpx.Client() as client:  # one keep-alive connection
        ids = {client.get(server.url).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_the_app_sees_the_chosen_id_in_its_request_headers(server: AsgiServer) -> None:
    seen = httpx.get(server.url, headers={"baggage": "tenant=acme"}).json()
    assert seen["header"] == seen["request_id"]
    assert set(seen["baggage_header"].split(",")) == {
        "tenant=acme",
        f"kilostar.request_id={seen['request_id']}",
    }


def test_custom_header_name_generator_and_validator(serve_asgi: Callable[..., AsgiServer]) -> None:
    server = serve_asgi(
        starlette_app(
            header_name="X-Correlation-Id",
            generator=lambda: "gen-1",
            validator=lambda value: value.startswith("ok-"),
        )
    )
    kept = httpx.get(server.url, headers={"X-Correlation-Id": "ok-7"})
    assert kept.headers["x-correlation-id"] == "ok-7"
    assert "x-request-id" not in kept.headers
    replaced = httpx.get(server.url, headers={"X-Correlation-Id": "nope"})
    assert replaced.headers["x-correlation-id"] == "gen-1" == replaced.json()["request_id"]


def test_a_generator_that_fails_or_returns_garbage_falls_back(
    serve_asgi: Callable[..., AsgiServer],
) -> None:
    def boom() -> str:
        raise RuntimeError("generator broke")

    for generator in (boom, lambda: "bad id\r\nx", lambda: 42):
        server = serve_asgi(starlette_app(generator=generator))
        response = httpx.get(server.url)
        assert response.status_code == 200
        assert GENERATED.fullmatch(response.headers["x-request-id"])


# -- bad input --------------------------------------------------------------------------------

BAD_HEADERS: list[tuple[str, list[tuple[str, bytes]]]] = [
    ("oversize", [("X-Request-Id", b"r" * 201)]),
    ("non-ascii", [("X-Request-Id", "réq-ü".encode())]),
    ("latin1", [("X-Request-Id", b"req-\xe9")]),
    ("empty", [("X-Request-Id", b"")]),
    ("space", [("X-Request-Id", b"req 1")]),
    ("quote-semicolon", [("X-Request-Id", b'req";x=1')]),
    ("html", [("X-Request-Id", b"<script>")]),
    ("duplicate", [("X-Request-Id", b"dup-one"), ("X-Request-Id", b"dup-two")]),
    ("comma-joined", [("X-Request-Id", b"dup-one, dup-two")]),
    ("crlf-in-baggage", [("baggage", b"kilostar.request_id=req%0D%0AInjected:%20yes")]),
    ("garbage-baggage", [("baggage", b";;;==,,,%zz,kilostar.request_id")]),
    ("huge-baggage", [("baggage", b"k=" + b"v" * 20_000)]),
    ("bad-id-in-baggage", [("baggage", b"kilostar.request_id=%E2%82%AC")]),
    (
        "bad-header-bad-baggage",
        [("X-Request-Id", b"a b"), ("baggage", b"kilostar.request_id=c%20d")],
    ),
]


@pytest.mark.parametrize(("case", "headers"), BAD_HEADERS, ids=[c for c, _ in BAD_HEADERS])
def test_bad_input_is_regenerated_served_and_never_echoed_or_logged(
    case: str, headers: list[tuple[str, bytes]], server: AsgiServer, stdlib_logs: LogCapture
) -> None:
    response = httpx.get(server.url, headers=headers)
    assert response.status_code == 200
    chosen = response.headers.get_list("x-request-id")
    assert len(chosen) == 1 and GENERATED.fullmatch(chosen[0])
    assert response.json()["request_id"] == chosen[0]
    line = next(line for line in stdlib_logs.lines if "handling /" in line)
    assert f"request_id={chosen[0]} " in line
    for _, value in headers:
        for marker in (b"Injected", b"dup-one", b"dup-two", b"\xe9", b"script", b"r" * 201):
            if marker in value:
                assert marker.decode("latin-1") not in stdlib_logs.text()
                assert marker.decode("latin-1") not in str(response.headers)


def test_identical_duplicate_headers_count_once(server: AsgiServer) -> None:
    response = httpx.get(server.url, headers=[("X-Request-Id", "req-a"), ("x-request-id", "req-a")])
    assert response.headers["x-request-id"] == "req-a"


def test_cr_lf_in_the_header_itself_never_reaches_the_app(server: AsgiServer) -> None:
    # No conforming client can send it; a raw socket can. uvicorn (h11) refuses it with a 400
    # before any app code runs (the middleware-level outcome is tested on a direct ASGI call).
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\rInjected: 1\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400")
    assert b"Injected" not in reply


async def test_cr_lf_from_a_lenient_server_is_regenerated_by_the_middleware() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(get_request_id())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent = await _call(
        RequestIdMiddleware(app), [(b"x-request-id", b"a\r\nInjected: 1"), (b"host", b"x")]
    )
    headers = dict(sent[0]["headers"])
    assert GENERATED.fullmatch(headers[b"x-request-id"].decode()) and seen == [
        headers[b"x-request-id"].decode()
    ]


async def test_malformed_scope_headers_are_left_alone_and_an_id_generated() -> None:
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((get_request_id(), scope["headers"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})

    headers: Any = [(b"x-request-id", "not-bytes"), (b"host", b"x")]
    sent = await _call(RequestIdMiddleware(app), headers)
    rid = dict(sent[0]["headers"])[b"x-request-id"].decode()
    assert GENERATED.fullmatch(rid)
    assert seen == [(rid, headers)]


# -- responses: replace, 500, streaming, background ---------------------------------------------


async def app_sets_header(request: Request) -> Response:
    return PlainTextResponse("x", headers={"X-Request-Id": "app-set", "x-request-id": "again"})


def test_a_header_set_by_the_app_is_replaced_not_duplicated(
    serve_asgi: Callable[..., AsgiServer],
) -> None:
    server = serve_asgi(starlette_app(Route("/set", app_sets_header)))
    response = httpx.get(f"{server.url}/set", headers={"X-Request-Id": "req-mine"})
    assert response.headers.get_list("x-request-id") == ["req-mine"]


async def explode(request: Request) -> Response:
    raise RuntimeError("unhandled")


def test_the_500_from_an_unhandled_exception_carries_the_id(
    serve_asgi: Callable[..., AsgiServer],
) -> None:
    server = serve_asgi(starlette_app(Route("/boom", explode)))
    response = httpx.get(f"{server.url}/boom", headers={"X-Request-Id": "req-500"})
    assert response.status_code == 500
    assert response.headers.get_list("x-request-id") == ["req-500"]
    generated = httpx.get(f"{server.url}/boom")
    assert generated.status_code == 500
    assert GENERATED.fullmatch(generated.headers["x-request-id"])


def test_wrapped_outermost_the_apps_own_500_handler_renders_with_the_id(
    serve_asgi: Callable[..., AsgiServer],
) -> None:
    async def on_error(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": "custom", "request_id": get_request_id()}, status_code=500)

    inner = Starlette(routes=[Route("/boom", explode)], exception_handlers={Exception: on_error})
    server = serve_asgi(RequestIdMiddleware(inner))
    response = httpx.get(f"{server.url}/boom", headers={"X-Request-Id": "req-own-500"})
    assert response.status_code == 500
    assert response.json() == {"error": "custom", "request_id": "req-own-500"}
    assert response.headers.get_list("x-request-id") == ["req-own-500"]


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(0.01)
            yield (get_request_id() + "\n").encode()

    return StreamingResponse(chunks())


def test_a_streaming_response_is_produced_inside_the_binding(
    serve_asgi: Callable[..., AsgiServer],
) -> None:
    server = serve_asgi(starlette_app(Route("/stream", stream)))
    with httpx.stream("GET", f"{server.url}/stream", headers={"X-Request-Id": "req-s"}) as r:
        lines = [line for line in r.iter_lines() if line]
        assert r.headers["x-request-id"] == "req-s"
    assert lines == ["req-s"] * 3


def test_background_tasks_run_inside_the_binding(serve_asgi: Callable[..., AsgiServer]) -> None:
    seen: list[str] = []
    done = threading.Event()

    async def later() -> None:
        await asyncio.sleep(0.01)
        seen.append(get_request_id())
        done.set()

    async def with_background(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(later))

    server = serve_asgi(starlette_app(Route("/bg", with_background)))
    response = httpx.get(f"{server.url}/bg", headers={"X-Request-Id": "req-bg"})
    assert response.status_code == 200
    assert done.wait(10)
    assert seen == ["req-bg"]


# -- nothing stays bound; lifespan; websocket ---------------------------------------------------


async def _call(
    app: Any, headers: list[tuple[bytes, bytes]], kind: str = "http"
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": kind, "method": "GET", "path": "/", "headers": headers, "query_string": b""}
    await app(scope, receive, send)
    return sent


async def test_nothing_stays_bound_after_the_request_even_after_an_exception() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(get_request_id())
        if scope["path"] == "/":
            raise ValueError("fails")

    before = context.get_current()
    with pytest.raises(ValueError, match="fails"):
        await _call(RequestIdMiddleware(app), [(b"x-request-id", b"req-leak")])
    assert seen == ["req-leak"]
    assert context.get_current() is before
    assert get_request_id() == ""


def test_lifespan_passes_through(serve_asgi: Callable[..., AsgiServer]) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append(f"startup:{get_request_id()}")
        yield
        events.append("shutdown")

    app = Starlette(
        routes=[Route("/", whoami)],
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
    )
    server = serve_asgi(app, lifespan="on")
    assert httpx.get(server.url).status_code == 200
    server.stop()
    assert events == ["startup:", "shutdown"]


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(get_request_id())
    await websocket.receive_text()
    await asyncio.sleep(0.01)
    await websocket.send_text(get_request_id())
    await websocket.close()


@pytest.mark.parametrize("incoming", ["req-ws", None])
def test_a_websocket_is_bound_for_the_whole_connection(
    incoming: str | None, serve_asgi: Callable[..., AsgiServer]
) -> None:
    app = Starlette(
        routes=[WebSocketRoute("/ws", ws_endpoint)],
        middleware=[Middleware(RequestIdMiddleware)],
    )
    server = serve_asgi(app)
    headers = {"X-Request-Id": incoming} if incoming else {}
    with connect(f"ws://127.0.0.1:{server.port}/ws", additional_headers=headers) as ws:
        first = ws.recv()
        ws.send("next")
        second = ws.recv()
        echoed = ws.response.headers.get_all("x-request-id")
    assert first == second == echoed[0] and len(echoed) == 1
    assert first == incoming if incoming else GENERATED.fullmatch(str(first))


# -- with OpenTelemetry's instrumentation, in either order ----------------------------------------


def _apps_in_both_orders(**options: Any) -> dict[str, Any]:
    plain = Starlette(routes=[Route("/", whoami)])
    return {
        "otel-outside": OpenTelemetryMiddleware(RequestIdMiddleware(plain, **options)),
        "otel-inside": RequestIdMiddleware(OpenTelemetryMiddleware(plain), **options),
    }


@pytest.fixture(params=["otel-outside", "otel-inside"])
def order(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _spans_of_trace(spans: Any, trace_hex: str) -> list[Any]:
    return [s for s in spans.all() if format(s.context.trace_id, "032x") == trace_hex]


def _server_span(spans: Any, trace_hex: str | None = None) -> Any:
    """The finished SERVER span (of ``trace_hex``), waiting for the server to end it."""

    def find() -> Any:
        found = spans.all() if trace_hex is None else _spans_of_trace(spans, trace_hex)
        return next((s for s in found if s.kind == trace.SpanKind.SERVER), None)

    return wait_until(find)


def test_with_otel_asgi_the_server_span_is_a_child_of_the_caller_and_carries_the_id(
    order: str, serve_asgi: Callable[..., AsgiServer], spans: Any, global_propagator: None
) -> None:
    server = serve_asgi(_apps_in_both_orders()[order])
    response = httpx.get(
        server.url, headers={"traceparent": TRACEPARENT, "X-Request-Id": "req-otel"}
    )
    assert response.json()["request_id"] == "req-otel"
    assert response.headers["x-request-id"] == "req-otel"
    server_span = _server_span(spans, TRACEPARENT[3:35])
    in_trace = _spans_of_trace(spans, TRACEPARENT[3:35])
    assert format(server_span.parent.span_id, "016x") == TRACEPARENT[36:52]
    assert len(in_trace) >= 2
    assert {s.attributes["kilostar.request_id"] for s in in_trace} == {"req-otel"}


def test_trust_incoming_false_ignores_header_and_baggage_in_either_order(
    order: str, serve_asgi: Callable[..., AsgiServer], spans: Any, global_propagator: None
) -> None:
    server = serve_asgi(_apps_in_both_orders(trust_incoming=False)[order])
    response = httpx.get(
        server.url,
        headers={
            "traceparent": TRACEPARENT,
            "X-Request-Id": "req-evil",
            "baggage": "kilostar.request_id=req-evil-bag,tenant=acme",
        },
    )
    seen = response.json()
    chosen = response.headers["x-request-id"]
    assert GENERATED.fullmatch(chosen)
    assert seen["request_id"] == seen["baggage"] == chosen
    assert "req-evil" not in json.dumps(seen)
    _server_span(spans, TRACEPARENT[3:35])
    in_trace = _spans_of_trace(spans, TRACEPARENT[3:35])
    assert in_trace and {s.attributes["kilostar.request_id"] for s in in_trace} == {chosen}


def test_without_the_kilostar_propagator_inner_otel_still_reads_the_id_from_baggage(
    serve_asgi: Callable[..., AsgiServer], spans: Any
) -> None:
    # OTel's default global propagator (tracecontext, baggage) and OTel placed *inside*: the
    # rewritten request baggage carries the chosen id into the context OTel extracts.
    server = serve_asgi(_apps_in_both_orders(trust_incoming=False)["otel-inside"])
    response = httpx.get(server.url, headers={"X-Request-Id": "req-evil"})
    chosen = response.headers["x-request-id"]
    assert response.json()["request_id"] == chosen != "req-evil"
    assert _server_span(spans).attributes["kilostar.request_id"] == chosen


def test_fastapi_with_the_fastapi_instrumentor(
    serve_asgi: Callable[..., AsgiServer], spans: Any, global_propagator: None
) -> None:
    app = FastAPI()

    @app.get("/items/{item}")
    async def item(item: str) -> dict[str, str]:
        return {"item": item, "request_id": get_request_id()}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unhandled")

    app.add_middleware(RequestIdMiddleware)
    FastAPIInstrumentor.instrument_app(app)
    try:
        server = serve_asgi(app)
        ok = httpx.get(f"{server.url}/items/7", headers={"traceparent": TRACEPARENT})
        boom_response = httpx.get(f"{server.url}/boom", headers={"X-Request-Id": "req-fa"})
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    rid = ok.headers["x-request-id"]
    assert ok.json() == {"item": "7", "request_id": rid}
    server_span = _server_span(spans, TRACEPARENT[3:35])
    assert server_span.attributes["kilostar.request_id"] == rid
    assert boom_response.status_code == 500
    assert boom_response.headers.get_list("x-request-id") == ["req-fa"]
    wait_until(
        lambda: any(
            s.kind == trace.SpanKind.SERVER
            and s.attributes.get("kilostar.request_id") == "req-fa"
            and not s.status.is_ok
            for s in spans.all()
        )
    )


def test_constructor_rejects_a_bad_header_name() -> None:
    with pytest.raises(ValueError, match="header_name"):
        RequestIdMiddleware(whoami, header_name="X Request\r\nId")  # type: ignore[arg-type]


def test_import_is_cheap_and_needs_no_starlette() -> None:
    code = (
        "import sys, kilostar_otel.integrations.asgi; "
        "print('starlette' in sys.modules, 'fastapi' in sys.modules, "
        "'opentelemetry.instrumentation' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False", "False", "False"]


def test_repeated_traceparent_lines_over_the_wire_ours_restarts_otel_takes_the_first(
    serve_asgi: Callable[..., AsgiServer], spans: Any
) -> None:
    second = "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203332-01"
    server = serve_asgi(_apps_in_both_orders()["otel-outside"])
    before = propagate.get_global_textmap()
    found: dict[str, str] = {}
    try:
        for name, propagator in (
            ("otel", CompositePropagator([TraceContextTextMapPropagator()])),
            ("ours", kilostar_otel.default_propagator()),
        ):
            spans.clear()
            propagate.set_global_textmap(propagator)
            httpx.get(server.url, headers=[("traceparent", TRACEPARENT), ("traceparent", second)])
            found[name] = format(_server_span(spans).context.trace_id, "032x")
    finally:
        propagate.set_global_textmap(before)
    assert found["otel"] == TRACEPARENT[3:35]  # OTel silently takes the first line
    assert found["ours"] not in (TRACEPARENT[3:35], second[3:35])  # ours restarts the trace
