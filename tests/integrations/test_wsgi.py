"""RequestIdMiddleware (WSGI) under a real threaded werkzeug server with real Flask apps."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
from flask import Flask, Response, jsonify, request, stream_with_context
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

from kilostar_otel import get_request_id
from kilostar_otel.integrations.wsgi import RequestIdMiddleware

from .conftest import LogCapture, WsgiServer, wait_until

GENERATED = re.compile(r"req-[0-9a-f]{32}")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
log = logging.getLogger("tests.wsgi")


def flask_app() -> Flask:
    app = Flask("wsgi-test")

    @app.get("/")
    def whoami() -> Any:
        log.info("handling %s", request.path)
        return jsonify(
            request_id=get_request_id(),
            baggage=baggage.get_baggage("kilostar.request_id"),
            header=request.headers.get("x-request-id"),
        )

    @app.get("/set")
    def sets_header() -> Any:
        return Response("x", headers=[("X-Request-Id", "app-set"), ("x-request-id", "again")])

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("unhandled")

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Iterator[str]:
            for _ in range(3):
                yield get_request_id() + "\n"

        return Response(chunks())

    @app.get("/stream-ctx")
    def stream_ctx() -> Any:
        return Response(stream_with_context(get_request_id() + "\n" for _ in range(2)))

    return app


def wrapped(**options: Any) -> Any:
    app = flask_app()
    app.wsgi_app = RequestIdMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
    return app


@pytest.fixture
def server(serve_wsgi: Callable[[Any], WsgiServer]) -> WsgiServer:
    return serve_wsgi(wrapped())


def test_a_missing_id_is_generated_bound_and_echoed(server: WsgiServer) -> None:
    response = requests.get(server.url, timeout=10)
    seen = response.json()
    assert GENERATED.fullmatch(seen["request_id"])
    assert response.headers["x-request-id"] == seen["request_id"] == seen["baggage"]
    assert seen["header"] == seen["request_id"]


def test_a_valid_incoming_id_or_baggage_is_kept(server: WsgiServer) -> None:
    by_header = requests.get(server.url, headers={"X-Request-Id": "req-w"}, timeout=10)
    assert by_header.json()["request_id"] == by_header.headers["x-request-id"] == "req-w"
    by_baggage = requests.get(
        server.url, headers={"baggage": "kilostar.request_id=req-wb"}, timeout=10
    )
    assert by_baggage.headers["x-request-id"] == "req-wb"


BAD: list[tuple[str, list[tuple[str, bytes]]]] = [
    ("oversize", [("X-Request-Id", b"r" * 201)]),
    ("non-ascii", [("X-Request-Id", "réq".encode())]),
    ("empty", [("X-Request-Id", b"")]),
    ("space", [("X-Request-Id", b"req 1")]),
    ("duplicate", [("X-Request-Id", b"dup-one"), ("X-Request-Id", b"dup-two")]),
    ("crlf-in-baggage", [("baggage", b"kilostar.request_id=req%0D%0AInjected:%20yes")]),
    ("garbage-baggage", [("baggage", b";;;==,,,%zz,kilostar.request_id")]),
]


@pytest.mark.parametrize(("case", "headers"), BAD, ids=[c for c, _ in BAD])
def test_bad_input_is_regenerated_served_and_never_echoed_or_logged(
    case: str, headers: list[tuple[str, bytes]], server: WsgiServer, stdlib_logs: LogCapture
) -> None:
    response = httpx.get(server.url, headers=headers)
    assert response.status_code == 200
    chosen = response.headers.get_list("x-request-id")
    assert len(chosen) == 1 and GENERATED.fullmatch(chosen[0])
    assert response.json()["request_id"] == chosen[0]
    line = next(line for line in stdlib_logs.lines if "handling /" in line)
    assert f"request_id={chosen[0]} " in line
    for marker in ("Injected", "dup-one", "dup-two", "réq", "r" * 201):
        assert marker not in stdlib_logs.text()
        assert marker not in str(response.headers)


def test_identical_duplicates_count_once(server: WsgiServer) -> None:
    response = httpx.get(server.url, headers=[("X-Request-Id", "req-a"), ("X-Request-Id", "req-a")])
    assert response.headers["x-request-id"] == "req-a"


def test_a_header_set_by_the_app_is_replaced_not_duplicated(server: WsgiServer) -> None:
    response = httpx.get(f"{server.url}/set", headers={"X-Request-Id": "req-mine"})
    assert response.headers.get_list("x-request-id") == ["req-mine"]


def test_flasks_500_carries_the_id(server: WsgiServer) -> None:
    response = httpx.get(f"{server.url}/boom", headers={"X-Request-Id": "req-500"})
    assert response.status_code == 500
    assert response.headers.get_list("x-request-id") == ["req-500"]


def test_a_raw_wsgi_app_that_raises_gets_a_500_with_the_id(
    serve_wsgi: Callable[[Any], WsgiServer], stdlib_logs: LogCapture
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("raw failure")

    server = serve_wsgi(RequestIdMiddleware(app))
    response = httpx.get(server.url, headers={"X-Request-Id": "req-raw"})
    assert response.status_code == 500
    assert response.headers.get_list("x-request-id") == ["req-raw"]
    assert response.text == "Internal Server Error"
    assert "request_id=req-raw " in stdlib_logs.text() and "raw failure" in stdlib_logs.text()


@pytest.mark.parametrize("path", ["/stream", "/stream-ctx"])
def test_a_streamed_body_is_produced_inside_the_binding(server: WsgiServer, path: str) -> None:
    with httpx.stream("GET", server.url + path, headers={"X-Request-Id": "req-s"}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert set(lines) == {"req-s"} and len(lines) >= 2


def test_trust_incoming_false(serve_wsgi: Callable[[Any], WsgiServer]) -> None:
    server = serve_wsgi(wrapped(trust_incoming=False))
    response = httpx.get(
        server.url,
        headers={"X-Request-Id": "req-evil", "baggage": "kilostar.request_id=req-evil2"},
    )
    chosen = response.headers["x-request-id"]
    assert GENERATED.fullmatch(chosen)
    assert response.json() == {"request_id": chosen, "baggage": chosen, "header": chosen}


def _call(app: Any, environ_extra: dict[str, str]) -> tuple[list[Any], bytes]:
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": None, **environ_extra}
    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return started, data


def test_nothing_stays_bound_after_the_response_is_closed() -> None:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        seen.append(get_request_id())
        yield get_request_id().encode()
        seen.append(get_request_id())

    before = context.get_current()
    started, data = _call(RequestIdMiddleware(app), {"HTTP_X_REQUEST_ID": "req-gen"})
    assert data == b"req-gen" and seen == ["req-gen", "req-gen"]
    assert ("x-request-id", "req-gen") in started[0][1]
    assert context.get_current() is before and get_request_id() == ""


def test_a_body_iterated_from_another_thread_still_sees_the_id() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield get_request_id().encode()

    before = context.get_current()
    body = RequestIdMiddleware(app)({"HTTP_X_REQUEST_ID": "req-t"}, lambda *a: None)
    out: list[bytes] = []
    worker = threading.Thread(target=lambda: (out.extend(body), body.close()))  # type: ignore[attr-defined]
    worker.start()
    worker.join(10)
    assert out == [b"req-t"]
    # __call__ attached in this thread and only this thread can undo it (a server closes where it
    # iterated, so real servers never hit this); restore the state for the following tests.
    context.attach(before)


# -- with OpenTelemetry's WSGI instrumentation, in either order ----------------------------------


@pytest.mark.parametrize("order", ["otel-outside", "otel-inside"])
def test_with_otel_wsgi_in_either_order(
    order: str, serve_wsgi: Callable[[Any], WsgiServer], spans: Any, global_propagator: None
) -> None:
    app = flask_app()
    if order == "otel-outside":
        app.wsgi_app = OpenTelemetryMiddleware(  # type: ignore[method-assign]
            RequestIdMiddleware(app.wsgi_app, trust_incoming=False)
        )
    else:
        app.wsgi_app = RequestIdMiddleware(  # type: ignore[method-assign]
            OpenTelemetryMiddleware(app.wsgi_app), trust_incoming=False
        )
    server = serve_wsgi(app)
    response = httpx.get(
        server.url,
        headers={"traceparent": TRACEPARENT, "X-Request-Id": "req-evil"},
    )
    chosen = response.headers["x-request-id"]
    assert response.json()["request_id"] == chosen != "req-evil"

    def server_span() -> Any:
        return next((s for s in spans.all() if s.kind == trace.SpanKind.SERVER), None)

    span = wait_until(server_span)
    assert format(span.context.trace_id, "032x") == TRACEPARENT[3:35]
    assert format(span.parent.span_id, "016x") == TRACEPARENT[36:52]
    assert span.attributes["kilostar.request_id"] == chosen
