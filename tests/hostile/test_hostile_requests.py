"""Hostile requests, sent as raw bytes, against real servers running RequestIdMiddleware.

uvicorn (ASGI) and werkzeug (WSGI) each serve an app wrapped in OpenTelemetry's middleware and
ours, with a handler span and a log line. Each request below is something no well-behaved client
sends: 8 KB and 64 KB values, CR/LF and NUL tricks, hundreds of duplicate headers, bytes that are
not UTF-8. For each one the documented outcome holds -- the server refuses the request before any
app code runs, or the app serves it with a kept or a generated id -- the server keeps serving, and
nothing of the hostile value reaches a response header, a span attribute or a log line.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as AsgiOtel
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as WsgiOtel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kilostar_otel import get_request_id
from kilostar_otel.ids import is_valid_request_id
from kilostar_otel.integrations import asgi, wsgi
from tests.integrations.conftest import AsgiServer, LogCapture, WsgiServer, wait_until

GENERATED = re.compile(r"req-[0-9a-f]{32}")
# A response header line as RFC 9110 allows it: a token, ": ", visible ASCII and spaces.
HEADER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*[\x21-\x7e]?[\x20-\x7e]*")
log = logging.getLogger("tests.hostile")
tracer = trace.get_tracer("tests.hostile")

# -- the apps -------------------------------------------------------------------------------------


def _answer(app_header: list[str]) -> dict[str, Any]:
    with tracer.start_as_current_span("handler"):
        log.info("handling")
        return {"request_id": get_request_id(), "app_header": app_header}


async def asgi_view(request: Request) -> JSONResponse:
    return JSONResponse(_answer(request.headers.getlist("x-request-id")))


def wsgi_view(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps(_answer([environ.get("HTTP_X_REQUEST_ID", "")])).encode()
    start_response(
        "200 OK", [("content-type", "application/json"), ("content-length", str(len(body)))]
    )
    return [body]


@pytest.fixture(params=["uvicorn", "werkzeug"])
def server(
    request: pytest.FixtureRequest,
    serve_asgi: Callable[..., AsgiServer],
    serve_wsgi: Callable[[Any], WsgiServer],
    global_propagator: None,
) -> tuple[str, int]:
    """(server name, port) of a server running OTel's middleware around ours around the app."""
    if request.param == "uvicorn":
        app = AsgiOtel(asgi.RequestIdMiddleware(Starlette(routes=[Route("/", asgi_view)])))
        return "uvicorn", serve_asgi(app).port
    started = serve_wsgi(WsgiOtel(wsgi.RequestIdMiddleware(wsgi_view)))
    return "werkzeug", started.server.server_port


# -- raw HTTP -------------------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    head: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


def raw_get(port: int, header_lines: bytes) -> RawResponse:
    """Send ``GET /`` with ``header_lines`` exactly as given; read the response until close."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header_lines + b"Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (and closed) before reading everything: read the answer
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = [tuple(line.split(b":", 1)) for line in lines]
    return RawResponse(
        int(status_line.split()[1]), head, [(k, v.strip()) for k, v in headers], body
    )


# -- the cases ------------------------------------------------------------------------------------

GEN = "generated"  # the app served it with a fresh id


@dataclass(frozen=True)
class Case:
    name: str
    lines: bytes
    #: server -> "generated", the id kept, or the status with which the server refused it
    outcome: dict[str, str | int]
    #: what must never appear in a response header, span attribute or log line
    forbidden: tuple[str, ...] = ("Injected",)


def _id(value: bytes) -> bytes:
    return b"X-Request-Id: " + value + b"\r\n"


def _many(name: bytes, values: list[bytes]) -> bytes:
    return b"".join(name + b": " + v + b"\r\n" for v in values)


A201 = "a" * 201  # any run this long would be an id over the 200-character limit
CASES = [
    Case("id-8KB", _id(b"a" * 8192), {"uvicorn": GEN, "werkzeug": GEN}, (A201,)),
    # http.server (werkzeug) refuses a header line over 64 KiB with 431.
    Case("id-64KB", _id(b"a" * 65536), {"uvicorn": GEN, "werkzeug": 431}, (A201,)),
    Case(
        "baggage-8KB-id-past-the-limit",
        b"baggage: k=" + b"v" * 8192 + b",kilostar.request_id=req-late-Injected\r\n",
        {"uvicorn": GEN, "werkzeug": GEN},
        ("req-late", "v" * 201),
    ),
    Case(
        "baggage-64KB-id-first",
        b"baggage: kilostar.request_id=req-first," + b"k=" + b"v" * 65536 + b"\r\n",
        {"uvicorn": "req-first", "werkzeug": 431},
        ("v" * 201,),
    ),
    Case(
        "baggage-180-members-then-the-id",
        b"baggage: " + b",".join(b"k%d=v" % i for i in range(180)) + b",kilostar.request_id=x\r\n",
        {"uvicorn": GEN, "werkzeug": GEN},
        ("k179",),
    ),
    # CR LF ends the header line: "Injected" is a header of its own, which nothing reads or echoes.
    Case("crlf-split", _id(b"req-a\r\nInjected: 1"), {"uvicorn": "req-a", "werkzeug": "req-a"}),
    # A bare CR: h11 refuses the request; http.server ends the line there.
    Case("bare-cr", _id(b"req-a\rInjected: 1"), {"uvicorn": 400, "werkzeug": "req-a"}),
    Case("bare-lf", _id(b"req-a\nInjected: 1"), {"uvicorn": "req-a", "werkzeug": "req-a"}),
    # obs-fold: the continuation joins the value with a space, which no id may contain.
    Case("obs-fold", _id(b"req-a\r\n Injected: 1"), {"uvicorn": GEN, "werkzeug": GEN}),
    Case("nul", _id(b"req-a\x00Injected"), {"uvicorn": 400, "werkzeug": GEN}),
    Case("tab-inside", _id(b"req-a\tInjected"), {"uvicorn": GEN, "werkzeug": GEN}),
    Case("percent-crlf-id", _id(b"req%0D%0AInjected:%201"), {"uvicorn": GEN, "werkzeug": GEN}),
    Case(
        "percent-crlf-baggage",
        b"baggage: kilostar.request_id=req%0D%0AInjected:%201\r\n",
        {"uvicorn": GEN, "werkzeug": GEN},
    ),
    Case(
        "invalid-utf8-id",
        _id(b"\xff\xfe\xc3\x28Injected"),
        {"uvicorn": GEN, "werkzeug": GEN},
        ("Injected", "\xff", "\ufffd"),
    ),
    Case(
        "overlong-utf8-id",
        _id(b"req-\xc0\xaf\xe0\x80\xafInjected"),
        {"uvicorn": GEN, "werkzeug": GEN},
        ("Injected", "\xc0", "\ufffd"),
    ),
    Case(
        "invalid-utf8-baggage",
        b"baggage: kilostar.request_id=\xff\xfeInjected,tenant=\xc3\x28\r\n",
        {"uvicorn": GEN, "werkzeug": GEN},
        ("Injected", "\xff", "\ufffd"),
    ),
    Case(
        "invalid-utf8-percent-baggage",
        b"baggage: kilostar.request_id=%FF%FEInjected\r\n",
        {"uvicorn": GEN, "werkzeug": GEN},
        ("Injected", "\xff", "\ufffd", "%FF"),
    ),
    # Duplicates: disagreeing values are ambiguous (a new id), identical ones count once.
    Case(
        "90-disagreeing-ids",
        _many(b"X-Request-Id", [b"req-dup%d" % i for i in range(90)]),
        {"uvicorn": GEN, "werkzeug": GEN},
        ("req-dup",),
    ),
    Case(
        "90-identical-ids-in-mixed-case",
        b"".join(
            (b"x-request-id", b"X-REQUEST-ID", b"X-Request-Id")[i % 3] + b": req-same\r\n"
            for i in range(90)
        ),
        {"uvicorn": "req-same", "werkzeug": "req-same"},
        (),
    ),
    # http.server (werkzeug) refuses more than 100 header lines with 431.
    Case(
        "1000-disagreeing-ids",
        _many(b"X-Request-Id", [b"req-dup%d" % i for i in range(1000)]),
        {"uvicorn": GEN, "werkzeug": 431},
        ("req-dup",),
    ),
    Case(
        "1000-identical-ids",
        _many(b"X-Request-Id", [b"req-same"] * 1000),
        {"uvicorn": "req-same", "werkzeug": 431},
        (),
    ),
    # Repeated baggage members: the last one within the W3C limits (180 members) wins.
    Case(
        "90-baggage-lines",
        _many(b"baggage", [b"kilostar.request_id=req-b%d" % i for i in range(90)]),
        {"uvicorn": "req-b89", "werkzeug": "req-b89"},
        ("req-b0,", "req-b88"),
    ),
    Case(
        "1000-baggage-lines",
        _many(b"baggage", [b"kilostar.request_id=req-b%d" % i for i in range(1000)]),
        {"uvicorn": "req-b179", "werkzeug": 431},
        ("req-b180", "req-b999"),
    ),
]


# -- the checks -----------------------------------------------------------------------------------


def _assert_clean(text: str, forbidden: tuple[str, ...], where: str) -> None:
    for marker in forbidden:
        assert marker not in text, f"{marker[:20]!r} reached {where}"


def _server_span(spans: Any) -> Any:
    return wait_until(
        lambda: next((s for s in spans.all() if s.kind == trace.SpanKind.SERVER), None)
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_hostile_request_is_answered_as_documented_and_nothing_leaks(
    case: Case, server: tuple[str, int], spans: Any, stdlib_logs: LogCapture
) -> None:
    name, port = server
    expected = case.outcome[name]
    response = raw_get(port, case.lines)

    # Every response header line is well formed: a token and visible ASCII, nothing split.
    for line in response.head.split(b"\r\n")[1:]:
        assert HEADER_LINE.fullmatch(line), line[:80]
    head = response.head.decode("latin-1")
    _assert_clean(head, case.forbidden, "a response header")
    assert not any(k.lower() == b"injected" for k, _ in response.headers)

    if isinstance(expected, int):
        # Refused by the server's HTTP parser: no app code ran, so no span and no log line.
        assert response.status == expected
        assert not any(k.lower() == b"x-request-id" for k, _ in response.headers)
        assert spans.all() == []
        assert "handling" not in stdlib_logs.text()
    else:
        assert response.status == 200
        echoed = [v.decode("ascii") for k, v in response.headers if k.lower() == b"x-request-id"]
        assert len(echoed) == 1
        chosen = echoed[0]
        assert is_valid_request_id(chosen)
        if expected == GEN:
            assert GENERATED.fullmatch(chosen)
        else:
            assert chosen == expected
        body = json.loads(response.body)
        assert body == {"request_id": chosen, "app_header": [chosen]}

        # Spans: the server span (OTel's middleware) and the handler span carry the chosen id,
        # and no attribute of any span holds the hostile value.
        _server_span(spans)
        finished = spans.all()
        assert {s.name for s in finished} >= {"handler"}
        for span in finished:
            assert span.attributes.get("kilostar.request_id") == chosen
            for key, value in span.attributes.items():
                _assert_clean(f"{key}={value}", case.forbidden, f"span {span.name!r}")

        # Logs: the handler's line names the chosen id.
        line = next(line for line in stdlib_logs.lines if line.endswith(" handling"))
        assert f"request_id={chosen} " in line
    _assert_clean(stdlib_logs.text(), case.forbidden, "a log line")

    # The server still serves ordinary requests.
    after = raw_get(port, _id(b"req-after"))
    assert after.status == 200
    assert json.loads(after.body)["request_id"] == "req-after"


@pytest.mark.parametrize(
    "incoming",
    [
        "k1=" + "v" * 4000 + ",k2=" + "v" * 4000 + ",k3=" + "v" * 150,  # 8,161 bytes
        ",".join(f"k{i}=v" for i in range(180)),  # 180 members
    ],
    ids=["8KB", "180-members"],
)
def test_a_full_incoming_baggage_does_not_hide_the_chosen_id_from_otel_inside(
    incoming: str, serve_asgi: Callable[..., AsgiServer], spans: Any
) -> None:
    # OpenTelemetry's middleware *inside* ours, with OpenTelemetry's default propagators (W3C
    # baggage drops a header over 8,192 bytes and reads 180 members at most): the rewritten
    # baggage must still carry the chosen id, so the app and its spans see it.
    app = asgi.RequestIdMiddleware(
        AsgiOtel(Starlette(routes=[Route("/", asgi_view)])), trust_incoming=False
    )
    port = serve_asgi(app).port
    response = raw_get(port, b"baggage: " + incoming.encode() + b"\r\n")
    assert response.status == 200
    chosen = dict(response.headers)[b"x-request-id"].decode()
    assert json.loads(response.body)["request_id"] == chosen
    assert _server_span(spans).attributes["kilostar.request_id"] == chosen
