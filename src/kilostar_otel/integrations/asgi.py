"""``RequestIdMiddleware``: the request id for ASGI apps (Starlette, FastAPI, any ASGI 3 app).

Pure ASGI (no Starlette import), so streaming responses, background tasks and websockets run
inside the binding. One context is attached per request and removed when the request ends.

    from kilostar_otel.integrations.asgi import RequestIdMiddleware
    app.add_middleware(RequestIdMiddleware)          # Starlette / FastAPI
    app = RequestIdMiddleware(app)                   # any ASGI app (outermost: see the docs)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

from opentelemetry.trace import Span

from kilostar_otel._guard import internal_error
from kilostar_otel._idcontext import context_with_request_id
from kilostar_otel._internals import SPAN_KEY, attach_context, current_context, reset_context
from kilostar_otel._names import (
    BAGGAGE_HEADER,
    REQUEST_ID_ATTRIBUTE,
    REQUEST_ID_BAGGAGE,
    REQUEST_ID_HEADER_NAME,
)
from kilostar_otel.ids import is_valid_request_id, new_request_id
from kilostar_otel.integrations._policy import (
    PLAIN_VALUE_PATTERN,
    RequestIdPolicy,
    allowlist_from,
    baggage_with_request_id,
    context_with_allowed_baggage,
)

__all__ = ["RequestIdMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BAGGAGE: Final = BAGGAGE_HEADER.encode("ascii")
# Messages that open a response (and carry its headers).
_STARTS: Final = frozenset(
    {"http.response.start", "websocket.accept", "websocket.http.response.start"}
)
_ERROR_BODY: Final = b"Internal Server Error"
_PLAIN_BAGGAGE_PREFIX: Final = f"{REQUEST_ID_BAGGAGE}=".encode("ascii")


class RequestIdMiddleware:
    """Binds the request id for each HTTP request and websocket connection, and echoes it.

    The id is the incoming ``X-Request-Id`` when it passes ``validator``, else a valid incoming
    ``kilostar.request_id`` baggage entry, else ``generator()``. It is bound (as the request id and
    as baggage) for the whole request, set on the current server span, and written to the response
    header on every response, replacing any value the app set. If the app raises before
    responding, a plain 500 carrying the header is sent and the exception re-raised.

    Args:
        app: the ASGI application to wrap.
        header_name: the request-id header (matched in any case).
        generator: makes a new id; a result that fails ``validator`` is replaced by
            ``req-<32 hex>``.
        validator: the request-id policy for incoming ids (default
            :func:`kilostar_otel.is_valid_request_id`); ids must also be visible ASCII.
        trust_incoming: ``False`` (a public edge) ignores incoming ids and incoming
            ``kilostar.request_id`` baggage and always generates.
        update_request_header: rewrite the request the app sees so its ``X-Request-Id`` and
            ``baggage`` carry the chosen id (an instrumentation placed inside then agrees).
        echo_header: write the id to the response header.
        baggage_allowlist: keys of incoming baggage entries to keep (a public edge); the others
            are dropped from the request's context and from the ``baggage`` header the app sees.
            ``None`` (the default) keeps every entry. ``kilostar.request_id`` is always ours.
    """

    __slots__ = ("_allowed", "_echo", "_name", "_policy", "_update", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        header_name: str = REQUEST_ID_HEADER_NAME,
        generator: Callable[[], str] = new_request_id,
        validator: Callable[[str], bool] = is_valid_request_id,
        trust_incoming: bool = True,
        update_request_header: bool = True,
        echo_header: bool = True,
        baggage_allowlist: Iterable[str] | None = None,
    ) -> None:
        self.app = app
        self._policy = RequestIdPolicy(header_name, generator, validator, trust_incoming)
        self._name = self._policy.header.encode("latin-1")
        self._update = update_request_header
        self._echo = echo_header
        self._allowed = allowlist_from(baggage_allowlist)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)  # lifespan and anything newer pass through
            return
        name = self._name
        id_lines: list[str] = []
        baggage_lines: list[str] = []
        others: list[Any] = []  # the other headers (as they came), for the rewrite
        rewrite = self._update
        try:
            for pair in scope.get("headers") or ():
                key, value = pair
                lowered = key.lower()
                if lowered == name:
                    id_lines.append(value.decode("latin-1"))
                elif lowered == _BAGGAGE:
                    baggage_lines.append(value.decode("latin-1"))
                else:
                    others.append(pair)
        except Exception:
            # Malformed headers (not byte pairs): no incoming id, and the request is left as is.
            id_lines, baggage_lines, rewrite = [], [], False
        request_id = self._policy.choose(id_lines, baggage_lines)
        encoded = request_id.encode("ascii")

        allowed = self._allowed
        current = current_context()
        if allowed is not None:
            current = context_with_allowed_baggage(current, allowed)
        ctx = context_with_request_id(current, request_id)
        span = ctx.get(SPAN_KEY)
        if span is not None and isinstance(span, Span) and span.is_recording():
            # An instrumentation outside us started the server span from the raw headers.
            span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
        if rewrite:
            # The app (and any instrumentation inside us) sees the chosen id, in both places.
            others.append((name, encoded))
            if (
                baggage_lines
                or allowed is not None
                or not PLAIN_VALUE_PATTERN.fullmatch(request_id)
            ):
                baggage = baggage_with_request_id(baggage_lines, request_id, allowed).encode(
                    "latin-1"
                )
            else:  # the common case, without a call: nothing to merge, nothing to encode
                baggage = _PLAIN_BAGGAGE_PREFIX + encoded
            others.append((_BAGGAGE, baggage))
            scope = {**scope, "headers": others}

        echo = self._echo
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message.get("type") in _STARTS:
                started = True
                if echo:
                    message = _with_header(message, name, encoded)
            await send(message)

        token = attach_context(ctx)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if not started and kind == "http":
                await _send_error(send, name, encoded)
            raise
        finally:
            try:
                reset_context(token)
            except ValueError:  # pragma: no cover - only if the app switched contexts under us
                pass


def _with_header(message: Message, name: bytes, value: bytes) -> Message:
    """A copy of ``message`` whose headers hold exactly one ``name: value``."""
    headers = list(message.get("headers") or ())
    for key, _ in headers:
        lowered = key.lower() if type(key) is bytes else str(key).lower().encode("latin-1")
        if lowered == name:  # the app set it too: ours replaces every such line
            headers = [
                pair
                for pair in headers
                if (
                    pair[0].lower()
                    if type(pair[0]) is bytes
                    else str(pair[0]).lower().encode("latin-1")
                )
                != name
            ]
            break
    headers.append((name, value))
    return {**message, "headers": headers}


async def _send_error(send: Send, name: bytes, value: bytes) -> None:
    """Answer 500 for an app that raised before responding, so even this response has the id."""
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(_ERROR_BODY)).encode("ascii")),
                    (name, value),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _ERROR_BODY})
    except Exception as exc:  # the client is gone; the app's exception is what matters
        internal_error("RequestIdMiddleware (ASGI) error response", exc)
