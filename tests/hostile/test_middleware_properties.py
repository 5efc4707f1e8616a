"""Property-based: whatever headers arrive, both middlewares serve, echo one safe id, leak nothing.

The middlewares are called the way a server calls them (no network, so hypothesis can try many
inputs): arbitrary header names and raw bytes for ASGI, arbitrary (even non-string) environ values
for WSGI, with every combination of ``trust_incoming`` and ``baggage_allowlist``. The real-server
behaviour is in test_hostile_requests.py. CI runs the default profile; the thorough run is
``.venv/bin/pytest tests/hostile/test_middleware_properties.py --hypothesis-profile=thorough``.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import baggage

from kilostar_otel import get_request_id
from kilostar_otel._w3c import parse_baggage
from kilostar_otel.ids import is_valid_request_id
from kilostar_otel.integrations import asgi, wsgi

NAMES = st.sampled_from(
    [b"x-request-id", b"X-Request-Id", b"X-REQUEST-ID", b"baggage", b"Baggage", b"host"]
) | st.binary(max_size=16)
VALUES = (
    st.binary(max_size=300)
    | st.from_regex(rb"[A-Za-z0-9\-_.:+/=@]{1,220}", fullmatch=True)
    | st.builds(lambda part, n: part * n, st.binary(min_size=1, max_size=4), st.integers(1, 20_000))
    | st.builds(
        lambda k, v: b"kilostar.request_id=" + v + b"," + k,
        st.binary(max_size=40),
        st.from_regex(rb"[A-Za-z0-9%\-_.]{0,60}", fullmatch=True),
    )
)
HEADERS = st.lists(st.tuples(NAMES, VALUES), max_size=12)
OPTIONS = st.fixed_dictionaries(
    {
        "trust_incoming": st.booleans(),
        "baggage_allowlist": st.none() | st.sets(st.sampled_from(["tenant", "k", "a"])),
    }
)


def _safe_id(value: object) -> str:
    """The id, after checking it is one we may bind, log and echo."""
    assert type(value) is str and value.isascii() and value.isprintable()
    assert is_valid_request_id(value)
    return value


def _drive(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never waits on anything (the app below answers at once)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise AssertionError("the middleware suspended without a reason")


@given(HEADERS, OPTIONS)
def test_asgi_serves_any_headers_with_exactly_one_safe_id(
    headers: list[tuple[bytes, bytes]], options: dict[str, Any]
) -> None:
    seen: list[tuple[str, list[tuple[bytes, bytes]], dict[str, object]]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((get_request_id(), list(scope["headers"]), dict(baggage.get_all())))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = asgi.RequestIdMiddleware(app, **options)
    _drive(middleware({"type": "http", "headers": headers}, receive, send))

    echoed = [v for k, v in sent[0]["headers"] if k.lower() == b"x-request-id"]
    assert len(echoed) == 1
    chosen = _safe_id(echoed[0].decode("ascii"))
    bound, app_headers, app_baggage = seen[0]
    assert bound == chosen
    assert [v for k, v in app_headers if k.lower() == b"x-request-id"] == [echoed[0]]
    app_bag = [v for k, v in app_headers if k.lower() == b"baggage"]
    assert len(app_bag) == 1
    assert parse_baggage(app_bag[0].decode("latin-1")).get("kilostar.request_id") == chosen
    assert app_baggage.get("kilostar.request_id") == chosen
    if options["baggage_allowlist"] is not None:
        allowed = options["baggage_allowlist"] | {"kilostar.request_id"}
        assert set(app_baggage) <= allowed
        assert set(parse_baggage(app_bag[0].decode("latin-1"))) <= allowed
    ids = [v for k, v in headers if k.lower() == b"x-request-id"]
    if (
        options["trust_incoming"]
        and len(ids) == 1
        and is_valid_request_id(ids[0].decode("latin-1"))
    ):
        assert chosen == ids[0].decode("ascii")
    elif not options["trust_incoming"]:
        assert chosen.startswith("req-") and len(chosen) == 36
    assert get_request_id() == ""  # nothing stays bound


ENVIRON_VALUES: st.SearchStrategy[Any] = (
    st.text(max_size=300)
    | st.binary(max_size=50).map(lambda b: b.decode("latin-1"))
    | st.from_regex(r"[A-Za-z0-9\-_.:+/=@]{1,220}", fullmatch=True)
    | st.none()
    | st.integers()
    | st.binary(max_size=20)
    | st.lists(st.text(max_size=10), max_size=3)
)


@given(ENVIRON_VALUES, ENVIRON_VALUES, OPTIONS)
def test_wsgi_serves_any_environ_with_exactly_one_safe_id(
    raw_id: Any, raw_baggage: Any, options: dict[str, Any]
) -> None:
    seen: list[tuple[str, Any, dict[str, object]]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append((get_request_id(), environ.get("HTTP_BAGGAGE"), dict(baggage.get_all())))
        start_response("200 OK", [])
        return [b""]

    started: list[list[tuple[str, str]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append(headers)
        return lambda data: None

    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    if raw_id is not None:
        environ["HTTP_X_REQUEST_ID"] = raw_id
    if raw_baggage is not None:
        environ["HTTP_BAGGAGE"] = raw_baggage
    body = wsgi.RequestIdMiddleware(app, **options)(environ, start_response)
    assert b"".join(body) == b""
    getattr(body, "close", lambda: None)()

    echoed = [v for k, v in started[0] if k.lower() == "x-request-id"]
    assert len(echoed) == 1
    chosen = _safe_id(echoed[0])
    bound, app_bag, app_baggage = seen[0]
    assert bound == chosen and environ["HTTP_X_REQUEST_ID"] == chosen
    assert parse_baggage(app_bag).get("kilostar.request_id") == chosen
    assert app_baggage.get("kilostar.request_id") == chosen
    if options["baggage_allowlist"] is not None:
        allowed = options["baggage_allowlist"] | {"kilostar.request_id"}
        assert set(parse_baggage(app_bag)) <= allowed
    if options["trust_incoming"] and is_valid_request_id(raw_id):
        assert chosen == raw_id
    assert get_request_id() == ""
