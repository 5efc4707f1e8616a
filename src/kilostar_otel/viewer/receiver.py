"""An embedded OTLP trace receiver: gRPC and HTTP/protobuf on loopback, spans kept in memory.

The demo, ``serve`` and the tests use it to see exactly what an exporter (or a collector) put on
the wire, without an external back end. It decodes with ``opentelemetry-proto`` and serves gRPC
with ``grpcio`` (both come with the OTLP exporter) and HTTP with the standard library.
"""

from __future__ import annotations

import logging
import socket
import threading
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OtlpReceiver", "ReceivedSpan", "spans_from_request"]

_log = logging.getLogger(__name__)

#: Largest request body accepted, compressed or not (the collector's default is 20 MiB too).
MAX_BODY_BYTES: Final = 20 * 1024 * 1024
TRACES_PATH: Final = "/v1/traces"
_GRPC_SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"

_KINDS: Final = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUS: Final = ("UNSET", "OK", "ERROR")
_ENCODINGS: Final = frozenset({"", "identity", "gzip", "deflate"})


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived over OTLP, with ids in lowercase hex and values decoded.

    ``kind`` is ``"INTERNAL"``, ``"SERVER"``, ``"CLIENT"``, ``"PRODUCER"``, ``"CONSUMER"`` or
    ``"UNSPECIFIED"``; ``status_code`` is ``"UNSET"``, ``"OK"`` or ``"ERROR"``. Array values
    are tuples, key-value lists dicts, bytes values ``bytes``.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: str
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    links: tuple[tuple[str, str], ...]
    events: tuple[tuple[str, dict[str, Any]], ...]
    scope_name: str
    transport: str

    @property
    def is_root(self) -> bool:
        """True when the span has no parent (it starts its trace)."""
        return not self.parent_span_id


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)


def _attributes(values: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in values}


def _enum_name(names: tuple[str, ...], value: int) -> str:
    return names[value] if 0 <= value < len(names) else str(value)


def spans_from_request(request: ExportTraceServiceRequest, transport: str) -> list[ReceivedSpan]:
    """Decode every span of an OTLP ``ExportTraceServiceRequest``."""
    found: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            for span in scope_spans.spans:
                found.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=_enum_name(_KINDS, span.kind),
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        status_code=_enum_name(_STATUS, span.status.code),
                        status_message=span.status.message,
                        attributes=_attributes(span.attributes),
                        resource=dict(resource),
                        links=tuple((ln.trace_id.hex(), ln.span_id.hex()) for ln in span.links),
                        events=tuple((ev.name, _attributes(ev.attributes)) for ev in span.events),
                        scope_name=scope_name,
                        transport=transport,
                    )
                )
    return found


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpReceiver

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        # Open (keep-alive) connections: stop() closes them, or a stopped receiver would go on
        # accepting spans on connections made before it stopped.
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Close every open connection (their handler threads then end)."""
        with self.connections_lock:
            connections, self.connections = self.connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken client connection is the client's problem: log it quietly, keep serving."""
        _log.debug("OTLP HTTP receiver: error while serving a request", exc_info=True)


class _HttpHandler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: request lines are not logged (they would only repeat the path)."""

    def _reply(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        """Accept ``POST /v1/traces`` with a protobuf body, gzip- or deflate-encoded or not."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._reply(411, b"Content-Length required")
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(413, b"request body too large")
            return
        body = self.rfile.read(length)
        if self.path.split("?", 1)[0] != TRACES_PATH:
            self._reply(404, b"only POST /v1/traces is served")
            return
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-protobuf":
            self._reply(415, b"only application/x-protobuf is accepted")
            return
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in _ENCODINGS:
            self._reply(415, b"only gzip, deflate or identity content encoding is accepted")
            return
        try:
            body = _decompress(body, encoding)
        except ValueError as exc:
            self._reply(400, str(exc).encode())
            return
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError:
            self._reply(400, b"body is not an ExportTraceServiceRequest")
            return
        self.server.receiver._accept(request, "http")
        self._reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def do_GET(self) -> None:
        """Only POST is served."""
        self._reply(405, b"use POST /v1/traces")


def _decompress(body: bytes, encoding: str) -> bytes:
    """Undo ``encoding``; the result is capped at :data:`MAX_BODY_BYTES` (zip bombs)."""
    if encoding in ("", "identity"):
        return body
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    try:
        out = zlib.decompressobj(wbits=wbits)
        data = out.decompress(body, MAX_BODY_BYTES)
    except zlib.error as exc:
        raise ValueError(f"body is not valid {encoding}") from exc
    if out.unconsumed_tail:
        raise ValueError("decompressed body too large")
    return data


class OtlpReceiver:
    """OTLP trace receiver for gRPC and HTTP/protobuf, storing decoded spans in memory.

    Port 0 picks a free port (read :attr:`grpc_endpoint` / :attr:`http_endpoint` after
    :meth:`start`). ``on_spans`` is called with each request's spans (from a server thread; its
    exceptions are logged and ignored). With ``on_request``, each request is handed to it as it
    arrived instead, and nothing is decoded or kept (a receiver that only counts, at a fraction of
    the CPU). Use as ``with OtlpReceiver() as rx:`` to stop it on exit.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        on_spans: Callable[[list[ReceivedSpan]], None] | None = None,
        on_request: Callable[[ExportTraceServiceRequest], None] | None = None,
    ) -> None:
        self._host = host
        self._grpc_port_requested = grpc_port
        self._http_port_requested = http_port
        self._on_spans = on_spans
        self._on_request = on_request
        self._cond = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._requests: list[ExportTraceServiceRequest] = []
        self._grpc_server: grpc.Server | None = None
        self._grpc_port = 0
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Bind both servers and start serving; returns ``self``."""
        if self._grpc_server is not None:
            raise RuntimeError("this OtlpReceiver is already started")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc"),
            # No SO_REUSEPORT: a port that is already taken must be an error, not a shared port.
            options=[("grpc.max_receive_message_length", MAX_BODY_BYTES), ("grpc.so_reuseport", 0)],
        )
        export = grpc.unary_unary_rpc_method_handler(
            self._grpc_export,
            request_deserializer=ExportTraceServiceRequest.FromString,
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_GRPC_SERVICE, {"Export": export}),)
        )
        address = f"{_host_for_url(self._host)}:{self._grpc_port_requested}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot bind the OTLP gRPC receiver to {address}") from exc
        if port == 0:
            raise OSError(f"cannot bind the OTLP gRPC receiver to {address}")
        try:
            http_server = _HttpServer((self._host, self._http_port_requested), _HttpHandler)
        except OSError:
            server.stop(None)
            raise
        http_server.receiver = self
        server.start()
        self._grpc_server, self._grpc_port = server, port
        self._http_server = http_server
        self._http_thread = threading.Thread(
            target=http_server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="otlp-http",
            daemon=True,
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        """Stop both servers (idempotent); received spans stay readable."""
        grpc_server, self._grpc_server = self._grpc_server, None
        http_server, self._http_server = self._http_server, None
        thread, self._http_thread = self._http_thread, None
        if http_server is not None:
            http_server.shutdown()
            http_server.server_close()
            http_server.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        if grpc_server is not None:
            grpc_server.stop(grace=1).wait(timeout=5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- endpoints ----------------------------------------------------------------------------

    @property
    def grpc_endpoint(self) -> str:
        """``host:port`` of the gRPC receiver (an insecure ``OTLPSpanExporter`` endpoint)."""
        if self._grpc_server is None:
            raise RuntimeError("start the OtlpReceiver first")
        return f"{_host_for_url(self._host)}:{self._grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://host:port`` of the HTTP receiver; spans are POSTed to ``/v1/traces``."""
        if self._http_server is None:
            raise RuntimeError("start the OtlpReceiver first")
        return f"http://{_host_for_url(self._host)}:{self._http_server.server_address[1]}"

    # -- what arrived -------------------------------------------------------------------------

    def _grpc_export(
        self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        self._accept(request, "grpc")
        return ExportTraceServiceResponse()

    def _accept(self, request: ExportTraceServiceRequest, transport: str) -> None:
        if self._on_request is not None:
            try:
                self._on_request(request)
            except Exception:
                _log.exception("OtlpReceiver on_request callback failed")
            return
        received = spans_from_request(request, transport)
        with self._cond:
            self._requests.append(request)
            self._spans.extend(received)
            self._cond.notify_all()
        if self._on_spans is not None and received:
            try:
                self._on_spans(received)
            except Exception:
                _log.exception("OtlpReceiver on_spans callback failed")

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._cond:
            return list(self._spans)

    @property
    def requests(self) -> list[ExportTraceServiceRequest]:
        """The raw ``ExportTraceServiceRequest`` messages received so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until at least ``count`` spans have arrived and return them all.

        Raises :class:`TimeoutError` naming what did arrive when ``timeout`` seconds pass first.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._spans) >= count, timeout):
                names = sorted(s.name for s in self._spans)
                raise TimeoutError(
                    f"expected at least {count} span(s) within {timeout}s, "
                    f"received {len(self._spans)}: {names}"
                )
            return list(self._spans)

    def drain_requests(self) -> list[ExportTraceServiceRequest]:
        """Return the raw requests received so far and forget them and their spans, atomically.

        For long-running consumers (``kilostar-otel serve --out``): memory stays bounded.
        """
        with self._cond:
            drained, self._requests = self._requests, []
            self._spans.clear()
            return drained

    def clear(self) -> None:
        """Forget every span and request received so far."""
        with self._cond:
            self._spans.clear()
            self._requests.clear()


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
