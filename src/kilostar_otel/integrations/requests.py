"""requests without OpenTelemetry instrumentation: a session and an adapter that add the headers.

Every request gets ``traceparent``/``tracestate``, ``baggage`` with ``kilostar.request_id`` and
``X-Request-Id`` from the current context (redirects included):

    from kilostar_otel.integrations.requests import Session
    session = Session()                                  # a requests.Session
    # or, keeping your own session and adapters' settings:
    session.mount("https://", KiloStarAdapter(max_retries=3))
"""

from __future__ import annotations

from typing import Any

import requests
from opentelemetry.propagators.textmap import TextMapPropagator
from requests.adapters import HTTPAdapter

from kilostar_otel._guard import internal_error
from kilostar_otel.propagation import default_propagator

__all__ = ["KiloStarAdapter", "Session", "inject_headers"]

_propagator: TextMapPropagator | None = None


def _default() -> TextMapPropagator:
    global _propagator
    if _propagator is None:
        _propagator = default_propagator()
    return _propagator


def inject_headers(
    request: requests.PreparedRequest, propagator: TextMapPropagator | None = None
) -> None:
    """Write the propagation headers of the current context into ``request``; never raises."""
    try:
        (propagator or _default()).inject(request.headers)
    except Exception as exc:
        internal_error("requests inject_headers", exc)


class KiloStarAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that adds the headers to every request it sends.

    Takes ``HTTPAdapter``'s arguments, plus ``propagator`` (default:
    :func:`kilostar_otel.default_propagator`).
    """

    def __init__(self, *args: Any, propagator: TextMapPropagator | None = None, **kwargs: Any):
        self._kilostar_propagator = propagator
        super().__init__(*args, **kwargs)

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        """Called by ``HTTPAdapter.send`` for each request."""
        super().add_headers(request, **kwargs)
        inject_headers(request, self._kilostar_propagator)


class Session(requests.Session):
    """A ``requests.Session`` that adds the headers whichever adapter sends the request."""

    def __init__(self, propagator: TextMapPropagator | None = None) -> None:
        super().__init__()
        self._kilostar_propagator = propagator

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Inject, then send as ``requests.Session`` does."""
        inject_headers(request, self._kilostar_propagator)
        return super().send(request, **kwargs)
