"""Real servers for the integration tests: uvicorn and werkzeug, in-process, on 127.0.0.1.

Servers run in a thread of this process (so their spans land in the session's in-memory
exporter), bind a free port chosen by the OS, and are stopped by the fixture that started them.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from opentelemetry import propagate
from werkzeug.serving import BaseWSGIServer, make_server

import kilostar_otel
from kilostar_otel.integrations.logging import FORMAT, RequestIdFilter


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (a server ends its spans after the
    client already has the response); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            assert result, "condition not met in time"
            return result
        time.sleep(0.01)


class AsgiServer:
    """One uvicorn server on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "off")
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **config))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self) -> AsgiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "uvicorn did not stop"


class WsgiServer:
    """One threaded werkzeug server on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="wsgi", daemon=True)

    def start(self) -> WsgiServer:
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=30)


@pytest.fixture
def serve_asgi() -> Iterator[Callable[..., AsgiServer]]:
    """Start ASGI apps under uvicorn; every server started is stopped at teardown."""
    started: list[AsgiServer] = []

    def start(app: Any, **config: Any) -> AsgiServer:
        server = AsgiServer(app, **config).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def serve_wsgi() -> Iterator[Callable[[Any], WsgiServer]]:
    """Start WSGI apps under werkzeug; every server started is stopped at teardown."""
    started: list[WsgiServer] = []

    def start(app: Any) -> WsgiServer:
        server = WsgiServer(app).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def global_propagator() -> Iterator[None]:
    """``kilostar_otel.set_global()`` for one test; the previous global propagator is restored."""
    before = propagate.get_global_textmap()
    kilostar_otel.set_global()
    yield
    propagate.set_global_textmap(before)


class LogCapture:
    """Stdlib log lines formatted with the documented FORMAT (and the RequestIdFilter)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter(FORMAT))
        self.handler.addFilter(RequestIdFilter())

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def stdlib_logs() -> Iterator[LogCapture]:
    """Everything logged through the root logger during the test, one formatted line each."""
    capture = LogCapture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(capture.handler)
    root.setLevel(logging.INFO)
    yield capture
    root.removeHandler(capture.handler)
    root.setLevel(level)
