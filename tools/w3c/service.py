"""The test service the official W3C Trace Context suite talks to (``make w3c``).

A real Starlette app under uvicorn with kilostar-otel's global propagator (``set_global()``),
``RequestIdMiddleware``, an SDK tracer provider with ``KiloStarSpanProcessor``, and OpenTelemetry's
ASGI and httpx instrumentation. The suite POSTs a JSON list of ``{"url": ..., "arguments": ...}``;
for each item the service POSTs ``arguments`` to ``url`` with an instrumented httpx client, so the
outgoing ``traceparent``/``tracestate`` are what our propagator made of the incoming ones.
Call-back URLs must point at loopback; anything else is refused.

    python -m tools.w3c.service PORT
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from kilostar_otel import KiloStarSpanProcessor, set_global
from kilostar_otel.integrations.asgi import RequestIdMiddleware


def _is_loopback(url: object) -> bool:
    if type(url) is not str:
        return False
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


async def _test(request: Request) -> Response:
    try:
        items: Any = await request.json()
    except ValueError:
        return PlainTextResponse("body must be JSON", status_code=400)
    if not isinstance(items, list):
        return PlainTextResponse("body must be a JSON list", status_code=400)
    async with httpx.AsyncClient(timeout=10.0) as client:
        for item in items:
            if not isinstance(item, dict) or not _is_loopback(item.get("url")):
                return PlainTextResponse("call-back URLs must be on loopback", status_code=400)
            await client.post(item["url"], json=item.get("arguments", []))
    return JSONResponse({"calls": len(items)})


def build_app() -> Any:
    """The instrumented app: OTel ASGI outermost, then RequestIdMiddleware, then the routes."""
    provider = TracerProvider()
    provider.add_span_processor(KiloStarSpanProcessor())
    trace.set_tracer_provider(provider)
    set_global()
    HTTPXClientInstrumentor().instrument()
    routes = Starlette(routes=[Route("/test", _test, methods=["POST"])])
    return OpenTelemetryMiddleware(RequestIdMiddleware(routes))


def main(argv: list[str]) -> int:
    """Serve on 127.0.0.1:PORT until stopped."""
    port = int(argv[0]) if argv else 5000
    uvicorn.run(build_app(), host="127.0.0.1", port=port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
