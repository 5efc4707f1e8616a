"""A public edge: ``trust_incoming=False`` and ``baggage_allowlist`` on real servers.

What a client sends as baggage is visible to every service downstream, so an edge keeps only the
entries it allows: they are dropped from the request's context (hence from every outgoing call)
and from the ``baggage`` header the app sees, with OpenTelemetry's middleware on either side.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry import baggage
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as AsgiOtel
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as WsgiOtel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import kilostar_otel
from kilostar_otel._w3c import parse_baggage
from kilostar_otel.integrations import asgi, wsgi
from tests.integrations.conftest import AsgiServer, WsgiServer

GENERATED = re.compile(r"req-[0-9a-f]{32}")
HOSTILE = {
    "X-Request-Id": "req-evil",
    "baggage": "tenant=acme,secret=hunter2;prop=1,kilostar.request_id=req-evil-bag",
}
HOSTILE_EXTRA_LINE = ("baggage", "internal.flag=on,tenant=acme")


def _seen() -> dict[str, Any]:
    """What the app sees in its context and what it would send downstream."""
    return {
        "request_id": kilostar_otel.get_request_id(),
        "context_baggage": {k: str(v) for k, v in baggage.get_all().items()},
        "outgoing": kilostar_otel.inject({}),
    }


async def asgi_view(request: Request) -> JSONResponse:
    return JSONResponse({**_seen(), "app_header": request.headers.getlist("baggage")})


def wsgi_view(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    import json

    body = json.dumps({**_seen(), "app_header": [environ.get("HTTP_BAGGAGE", "")]}).encode()
    start_response("200 OK", [("content-type", "application/json")])
    return [body]


def asgi_app(order: str, **options: Any) -> Any:
    plain = Starlette(routes=[Route("/", asgi_view)])
    if order == "otel-outside":
        return AsgiOtel(asgi.RequestIdMiddleware(plain, **options))
    return asgi.RequestIdMiddleware(AsgiOtel(plain), **options)


def wsgi_app(order: str, **options: Any) -> Any:
    if order == "otel-outside":
        return WsgiOtel(wsgi.RequestIdMiddleware(wsgi_view, **options))
    return wsgi.RequestIdMiddleware(WsgiOtel(wsgi_view), **options)


@pytest.fixture(params=["asgi", "wsgi"])
def start(
    request: pytest.FixtureRequest,
    serve_asgi: Callable[..., AsgiServer],
    serve_wsgi: Callable[[Any], WsgiServer],
    global_propagator: None,
) -> Callable[..., str]:
    """Start the app (``order`` of OpenTelemetry's middleware, middleware options); its URL."""

    def run(order: str, **options: Any) -> str:
        if request.param == "asgi":
            return serve_asgi(asgi_app(order, **options)).url
        return serve_wsgi(wsgi_app(order, **options)).url

    return run


ORDERS = pytest.mark.parametrize("order", ["otel-outside", "otel-inside"])


@ORDERS
def test_an_edge_keeps_only_allowed_baggage_and_its_own_id(
    start: Callable[..., str], order: str
) -> None:
    url = start(order, trust_incoming=False, baggage_allowlist={"tenant"})
    response = httpx.get(url, headers=[*HOSTILE.items(), HOSTILE_EXTRA_LINE])
    assert response.status_code == 200
    chosen = response.headers["x-request-id"]
    assert GENERATED.fullmatch(chosen)
    seen = response.json()
    expected = {"tenant": "acme", "kilostar.request_id": chosen}
    assert seen["request_id"] == chosen
    assert seen["context_baggage"] == expected
    # Downstream services receive exactly that, and nothing of what the client sent otherwise.
    assert parse_baggage(seen["outgoing"]["baggage"]) == expected
    assert seen["outgoing"]["x-request-id"] == chosen
    for header in seen["app_header"]:
        assert parse_baggage(header) == expected
    text = response.text
    for dropped in ("secret", "hunter2", "internal.flag", "req-evil"):
        assert dropped not in text


@ORDERS
def test_an_empty_allowlist_drops_every_incoming_entry(
    start: Callable[..., str], order: str
) -> None:
    url = start(order, baggage_allowlist=())
    response = httpx.get(url, headers={"X-Request-Id": "req-kept", "baggage": HOSTILE["baggage"]})
    seen = response.json()
    # trust_incoming stays True here: the valid header id is still taken.
    assert seen["context_baggage"] == {"kilostar.request_id": "req-kept"}
    assert parse_baggage(seen["outgoing"]["baggage"]) == {"kilostar.request_id": "req-kept"}


@ORDERS
def test_without_an_allowlist_incoming_baggage_travels_on(
    start: Callable[..., str], order: str
) -> None:
    # The default (an internal service behind the edge): every valid entry is kept.
    url = start(order)
    response = httpx.get(url, headers={"baggage": "tenant=acme,secret=hunter2"})
    seen = response.json()
    chosen = response.headers["x-request-id"]
    expected = {"tenant": "acme", "secret": "hunter2", "kilostar.request_id": chosen}
    assert seen["context_baggage"] == expected
    assert parse_baggage(seen["outgoing"]["baggage"]) == expected


@pytest.mark.parametrize("middleware", [asgi.RequestIdMiddleware, wsgi.RequestIdMiddleware])
@pytest.mark.parametrize("bad", ["tenant", b"tenant", ["tenant", ""], [1]])
def test_a_malformed_allowlist_fails_at_start_up(middleware: Any, bad: Any) -> None:
    with pytest.raises(TypeError, match="baggage_allowlist"):
        middleware(wsgi_view, baggage_allowlist=bad)
