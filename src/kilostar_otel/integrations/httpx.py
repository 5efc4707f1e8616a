"""httpx without OpenTelemetry instrumentation: request hooks that add the propagation headers.

Every request gets ``traceparent``/``tracestate`` (the current span), ``baggage`` with
``kilostar.request_id`` and ``X-Request-Id``, from the current context, as the instrumented
client would write them. For sync and async clients:

    from kilostar_otel.integrations.httpx import install
    client = install(httpx.AsyncClient())      # or httpx.Client()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry.propagators.textmap import TextMapPropagator

from kilostar_otel._guard import internal_error
from kilostar_otel.propagation import default_propagator

if TYPE_CHECKING:
    import httpx

__all__ = ["async_inject_hook", "inject_hook", "install"]

_C = TypeVar("_C", "httpx.Client", "httpx.AsyncClient")
_propagator: TextMapPropagator | None = None


def _default() -> TextMapPropagator:
    global _propagator
    if _propagator is None:
        _propagator = default_propagator()
    return _propagator


def _inject(request: httpx.Request, propagator: TextMapPropagator | None) -> None:
    try:
        # The default setter assigns ``headers[key] = value``: it replaces a value the caller set.
        (propagator or _default()).inject(request.headers)
    except Exception as exc:  # a hook must never break the user's request
        internal_error("httpx request hook", exc)


def inject_hook(request: httpx.Request) -> None:
    """``httpx.Client`` request hook: ``event_hooks={"request": [inject_hook]}``."""
    _inject(request, None)


async def async_inject_hook(request: httpx.Request) -> None:
    """``httpx.AsyncClient`` request hook: ``event_hooks={"request": [async_inject_hook]}``."""
    _inject(request, None)


def install(client: _C, propagator: TextMapPropagator | None = None) -> _C:
    """Add the matching hook to ``client`` (sync or async) and return it.

    ``propagator`` defaults to :func:`kilostar_otel.default_propagator` (W3C trace context and
    baggage, then kilostar); pass ``opentelemetry.propagate.get_global_textmap()`` to follow the
    global configuration instead. Installing twice adds the hook once.
    """
    import httpx

    hook: Any
    if isinstance(client, httpx.AsyncClient):

        async def hook(request: httpx.Request) -> None:
            _inject(request, propagator)

    else:

        def hook(request: httpx.Request) -> None:
            _inject(request, propagator)

    hook._kilostar_hook = True
    hooks = client.event_hooks
    requests = list(hooks.get("request", ()))
    if not any(getattr(h, "_kilostar_hook", False) for h in requests):
        requests.append(hook)
    client.event_hooks = {**hooks, "request": requests}
    return client
