"""``RequestIdMiddleware`` for WSGI apps (Flask, Django, any WSGI app): the ASGI twin.

Same options and outcomes as :class:`kilostar_otel.integrations.asgi.RequestIdMiddleware`. The id
stays bound while the response body is produced (streamed bodies included) and is removed when
the server closes the response.

    from kilostar_otel.integrations.wsgi import RequestIdMiddleware
    app.wsgi_app = RequestIdMiddleware(app.wsgi_app)      # Flask
    application = RequestIdMiddleware(get_wsgi_application())  # Django (wsgi.py)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextvars import Token
from types import TracebackType
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode

from kilostar_otel._idcontext import context_with_request_id
from kilostar_otel._internals import attach_context, current_context, reset_context
from kilostar_otel._names import REQUEST_ID_ATTRIBUTE, REQUEST_ID_HEADER_NAME
from kilostar_otel.ids import is_valid_request_id, new_request_id
from kilostar_otel.integrations._policy import (
    RequestIdPolicy,
    allowlist_from,
    baggage_with_request_id,
    context_with_allowed_baggage,
)

__all__ = ["RequestIdMiddleware"]

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_ERROR_BODY: Final = b"Internal Server Error"
_log = logging.getLogger(__name__)


def _reset(token: Token[Context]) -> None:
    try:
        reset_context(token)
    except ValueError:
        pass  # closed from another thread or context: that one never saw our attach


class RequestIdMiddleware:
    """Binds the request id for each WSGI request and echoes it in the response header.

    Options as for the ASGI middleware: ``header_name``, ``generator``, ``validator``,
    ``trust_incoming``, ``update_request_header`` (rewrites ``environ``), ``echo_header``,
    ``baggage_allowlist``. An exception from the app before it started the response is logged,
    recorded on the current span and answered with a plain 500 that carries the header.
    """

    __slots__ = ("_allowed", "_echo", "_environ_key", "_name", "_policy", "_update", "app")

    def __init__(
        self,
        app: WSGIApp,
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
        self._name = self._policy.header
        self._environ_key = "HTTP_" + self._name.upper().replace("-", "_")
        self._update = update_request_header
        self._echo = echo_header
        self._allowed = allowlist_from(baggage_allowlist)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        raw_id = environ.get(self._environ_key)
        raw_baggage = environ.get("HTTP_BAGGAGE")
        id_lines = [raw_id] if type(raw_id) is str else []
        baggage_lines = [raw_baggage] if type(raw_baggage) is str else []
        request_id = self._policy.choose(id_lines, baggage_lines)

        allowed = self._allowed
        ctx = context_with_request_id(
            context_with_allowed_baggage(current_context(), allowed), request_id
        )
        span = trace.get_current_span(ctx)
        if span.is_recording():
            span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
        if self._update:
            environ[self._environ_key] = request_id
            environ["HTTP_BAGGAGE"] = baggage_with_request_id(baggage_lines, request_id, allowed)

        name, echo = self._name, self._echo
        started = False

        def start_with_id(
            status: str, headers: list[tuple[str, str]], exc_info: _ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            nonlocal started
            started = True
            if echo:
                headers = [(k, v) for k, v in headers if k.lower() != name]
                headers.append((name, request_id))
            return start_response(status, headers, exc_info)

        token = attach_context(ctx)
        try:
            body = self.app(environ, start_with_id)
        except Exception as exc:
            try:
                if started:
                    raise
                _log.exception("unhandled exception in the WSGI application")
                if span.is_recording():
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                start_response(
                    "500 Internal Server Error",
                    [
                        ("content-type", "text/plain; charset=utf-8"),
                        ("content-length", str(len(_ERROR_BODY))),
                        (name, request_id),
                    ],
                    (type(exc), exc, exc.__traceback__),
                )
                return [_ERROR_BODY]
            finally:
                _reset(token)
        if type(body) is list or type(body) is tuple:
            _reset(token)  # a materialised body: no app code runs while it is sent
            return body
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            _reset(token)  # keep the server's sendfile path
            return body
        return _BoundBody(body, ctx, token)


class _BoundBody:
    """The app's response iterable, produced in the request's context and closed there.

    The context attached in ``__call__`` stays current until ``close()``; if the server iterates
    from another thread or context, each step runs with the request's context attached.
    """

    __slots__ = ("_body", "_ctx", "_iterator", "_token")

    def __init__(self, body: Iterable[bytes], ctx: Context, token: Token[Context]) -> None:
        self._body = body
        self._ctx = ctx
        self._token: Token[Context] | None = token
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> _BoundBody:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._body)
        if current_context() is self._ctx:
            return next(self._iterator)
        token = attach_context(self._ctx)
        try:
            return next(self._iterator)
        finally:
            _reset(token)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        try:
            if close is not None:
                if current_context() is self._ctx:
                    close()
                else:
                    token = attach_context(self._ctx)
                    try:
                        close()
                    finally:
                        _reset(token)
        finally:
            own, self._token = self._token, None
            if own is not None:
                _reset(own)
