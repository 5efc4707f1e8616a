"""``kilostar-otel demo``: a real app, real requests, and the two tiers of ids as trees.

A Starlette app under uvicorn on 127.0.0.1 (a free port), wrapped in ``RequestIdMiddleware`` and
OpenTelemetry's ASGI middleware, answers requests from an instrumented httpx client. ``POST /plan``
starts a workflow whose steps run as asyncio tasks and in threads (or as Ray tasks with
``--ray``). The spans go over OTLP to an embedded receiver, which the demo prints as trees and
writes as OTLP/JSON lines; or, with ``--otlp-endpoint``, to a real collector or Jaeger.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import kilostar_otel as ko
from kilostar_otel.cli import DEFAULT_JSONL, missing_extra

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["run_demo"]

SERVICE_NAME = "kilostar-demo"
_TRACER = "kilostar_otel.demo"
_STEP_SECONDS = 0.005


@dataclass(frozen=True)
class _Call:
    """One request the demo sends, and what came back."""

    method: str
    path: str
    sent_request_id: str | None
    status: int = 0
    request_id: str = ""
    trace_id: str = ""


_CALLS = (
    _Call("GET", "/hello", "demo-hello-1"),
    _Call("GET", "/hello", None),
    _Call("POST", "/plan", "demo-plan-1"),
    _Call("GET", "/fail", "demo-fail-1"),
)


# -- the app ------------------------------------------------------------------------------------


def _tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER, ko.__version__)


async def _async_step(name: str) -> str:
    with _tracer().start_as_current_span(f"step {name}", attributes={"demo.step.kind": "async"}):
        await asyncio.sleep(_STEP_SECONDS)
        return name


def _thread_step(name: str) -> str:
    with _tracer().start_as_current_span(f"step {name}", attributes={"demo.step.kind": "thread"}):
        time.sleep(_STEP_SECONDS)
        return name


def _make_ray_step() -> Callable[[str], Awaitable[str]]:
    """A Ray task per step, traced by kilostar_otel.integrations.ray (ids and trace carried)."""
    from kilostar_otel.integrations.ray import remote

    def demo_step(name: str) -> str:
        with _tracer().start_as_current_span(f"step {name}", attributes={"demo.step.kind": "ray"}):
            time.sleep(_STEP_SECONDS)
            return name

    demo_step.__qualname__ = "demo_step"  # the Ray task's span name
    ray_step = remote(demo_step)

    async def run(name: str) -> str:
        result: str = await ray_step.remote(name)
        return result

    return run


def _make_app(ray_step: Callable[[str], Awaitable[str]] | None) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from kilostar_otel.integrations.asgi import RequestIdMiddleware
    from kilostar_otel.integrations.threads import ThreadPoolExecutor

    threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="demo-step")

    async def hello(request: Request) -> Response:
        return JSONResponse({"request_id": ko.get_request_id()})

    async def plan(request: Request) -> Response:
        tracer = _tracer()
        with tracer.start_as_current_span("plan: choose steps"):
            pass
        async with ko.workflow("plan") as wf:
            # Two async steps side by side, then two steps in worker threads (or Ray tasks).
            await asyncio.gather(_async_step("fetch docs"), _async_step("fetch web"))
            if ray_step is not None:
                await asyncio.gather(ray_step("rank"), ray_step("summarise"))
            else:
                loop = asyncio.get_running_loop()
                await asyncio.gather(
                    loop.run_in_executor(threads, _thread_step, "rank"),
                    loop.run_in_executor(threads, _thread_step, "summarise"),
                )
            trace_id = wf.trace_id
        return JSONResponse({"request_id": ko.get_request_id(), "trace_id": trace_id})

    async def fail(request: Request) -> Response:
        with _tracer().start_as_current_span("charge card") as span:
            error = RuntimeError("card declined (the demo's deliberate failure)")
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
        return JSONResponse({"request_id": ko.get_request_id(), "error": str(error)}, 500)

    app: Starlette = Starlette(
        routes=[
            Route("/hello", hello, methods=["GET"]),
            Route("/plan", plan, methods=["POST"]),
            Route("/fail", fail, methods=["GET"]),
        ]
    )
    # The request id is bound outermost, so the server span and everything inside carry it.
    return RequestIdMiddleware(OpenTelemetryMiddleware(app, exclude_spans=["receive", "send"]))


class _Server:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a thread; stopped by :meth:`stop`."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server: uvicorn.Server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="demo-uvicorn"
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the demo's uvicorn server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


#: Seconds a demo request may take to connect, and to be answered (with ``--ray``, Ray starts a
#: worker process for the first steps, which a loaded machine can take long to do).
_TIMEOUT = 15.0
_RAY_READ_TIMEOUT = 180.0


async def _send(url: str, read_timeout: float) -> list[_Call]:
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    results: list[_Call] = []
    timeout = httpx.Timeout(_TIMEOUT, read=read_timeout)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        HTTPXClientInstrumentor.instrument_client(client)
        for call in _CALLS:
            if call.sent_request_id is None:
                response = await client.request(call.method, call.path)
            else:
                # Bound here, the id leaves as X-Request-Id and baggage (the global propagator).
                with ko.request_id_scope(call.sent_request_id):
                    response = await client.request(call.method, call.path)
            body = response.json()
            results.append(
                _Call(
                    call.method,
                    call.path,
                    call.sent_request_id,
                    response.status_code,
                    response.headers.get("x-request-id", ""),
                    str(body.get("trace_id", "")),
                )
            )
    return results


# -- running it ---------------------------------------------------------------------------------


def _protocol_for(endpoint: str, protocol: str | None) -> str:
    if protocol is not None:
        return protocol
    parts = urlsplit(endpoint)
    return "http/protobuf" if parts.port == 4318 or parts.path.endswith("/v1/traces") else "grpc"


class _CheckedExporter(SpanExporter):
    """The OTLP exporter, counting what it delivered and what it failed to deliver."""

    def __init__(self, endpoint: str, protocol: str) -> None:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            self._inner: SpanExporter = GrpcExporter(
                endpoint=endpoint, insecure=endpoint.startswith("http://"), timeout=5
            )
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            if urlsplit(endpoint).path in ("", "/"):
                endpoint = endpoint.rstrip("/") + "/v1/traces"
            self._inner = HttpExporter(endpoint=endpoint, timeout=5)
        self.delivered = 0
        self.failed = 0
        self.sent: list[Any] = []  # the export requests, kept for --out

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        self.sent.append(encode_spans(spans))
        result = self._inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.delivered += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _print_calls(calls: list[_Call], out: IO[str]) -> None:
    for call in calls:
        line = f"  {call.method:<4} {call.path:<6} {call.status}  request_id={call.request_id}"
        if call.trace_id:
            line += f"  workflow trace_id={call.trace_id}"
        if call.sent_request_id is None:
            line += "  (sent without X-Request-Id: the server made one)"
        print(line, file=out)


def _fail(err: IO[str], message: str, status: int = 1) -> int:
    print(f"kilostar-otel demo: error: {message}", file=err)
    return status


def run_demo(
    args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    """Run the demo described in the module docstring; return the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    message = missing_extra("demo")
    if message is not None:
        print(message, file=err)
        return 1
    if args.ray:
        if importlib.util.find_spec("ray") is None:
            return _fail(err, "--ray needs kilostar-otel[ray] (ray is missing)", 2)
        # Ray forks workers while gRPC (the receiver, the exporter) runs: no fork handlers.
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from kilostar_otel.viewer.otlp_json import OtlpJsonLinesWriter
    from kilostar_otel.viewer.receiver import OtlpReceiver

    receiver: OtlpReceiver | None = None
    if args.otlp_endpoint is None:
        receiver = OtlpReceiver().start()
        endpoint, protocol = f"http://{receiver.grpc_endpoint}", "grpc"
        where = f"the embedded OTLP receiver ({receiver.grpc_endpoint}, gRPC)"
    else:
        endpoint = args.otlp_endpoint
        protocol = _protocol_for(endpoint, args.protocol)
        where = f"{endpoint} ({protocol})"
        if protocol == "grpc" and urlsplit(endpoint).path not in ("", "/"):
            return _fail(err, f"a gRPC endpoint cannot have a path: {endpoint!r}", 2)
    try:
        exporter = _CheckedExporter(endpoint, protocol)
        telemetry = ko.configure(
            service_name=SERVICE_NAME, exporter=exporter, sampler="parentbased_always_on"
        )
    except ValueError as exc:
        if receiver is not None:
            receiver.stop()
        return _fail(err, str(exc), 2)

    ray_dir: str | None = None
    try:
        ray_step = None
        if args.ray:
            ray_dir = tempfile.mkdtemp(prefix="kilostar-demo-ray-")
            ray_step = _start_ray(ray_dir, endpoint, protocol, err)
        server = _Server(_make_app(ray_step))
        server.start()
        print(f"kilostar-otel demo: app on {server.url}, spans to {where}", file=out)
        try:
            calls = asyncio.run(_send(server.url, _RAY_READ_TIMEOUT if args.ray else _TIMEOUT))
        finally:
            server.stop()
        telemetry.force_flush()
        _print_calls(calls, out)
        expected = [200, 200, 200, 500]
        if [c.status for c in calls] != expected:
            return _fail(err, f"unexpected statuses {[c.status for c in calls]}, not {expected}")
        if exporter.failed or not exporter.delivered:
            telemetry.shutdown(1000)  # its own warning about the loss first; ours is the last line
            return _fail(
                err,
                f"{exporter.failed} span(s) could not be sent to {where}: is an OTLP receiver "
                "listening there? (an OTLP/HTTP port other than 4318 needs "
                "--protocol http/protobuf)",
            )
        if receiver is None:
            _print_remote_hint(calls, exporter.delivered, where, out)
            if args.out:
                with OtlpJsonLinesWriter(args.out) as writer:
                    for request in exporter.sent:
                        writer.write(request)
                print(f"The same spans are written as OTLP/JSON lines to {args.out}.", file=out)
            return 0
        return _show(receiver, calls, args, out)
    finally:
        if ray_dir is not None:
            import ray

            ray.shutdown()
            shutil.rmtree(ray_dir, ignore_errors=True)
        telemetry.shutdown()
        if receiver is not None:
            receiver.stop()


def _start_ray(
    temp_dir: str, endpoint: str, protocol: str, err: IO[str]
) -> Callable[[str], Awaitable[str]]:
    from kilostar_otel.integrations.ray import FLUSH_MODE_ENV, start_local_cluster

    print("kilostar-otel demo: starting a local Ray (127.0.0.1 only) ...", file=err, flush=True)
    start_local_cluster(
        temp_dir,
        num_cpus=2,
        endpoint=endpoint,
        protocol=protocol,
        service_name=f"{SERVICE_NAME}-ray",
        log_to_driver=False,
        # The demo shows the workers' spans right after the requests: calls wait for export.
        runtime_env={"env_vars": {FLUSH_MODE_ENV: "wait"}},
    )
    return _make_ray_step()


def _print_remote_hint(calls: list[_Call], delivered: int, where: str, out: IO[str]) -> None:
    plan = next(c for c in calls if c.trace_id)
    print(
        f"\n{delivered} spans delivered to {where}."
        f"\nIn Jaeger: search the tag kilostar.request_id={plan.request_id}, or paste the "
        f"workflow trace_id {plan.trace_id} into 'Lookup by Trace ID' (docs/jaeger.md).",
        file=out,
    )


def _show(receiver: Any, calls: list[_Call], args: argparse.Namespace, out: IO[str]) -> int:
    from kilostar_otel.viewer.otlp_json import OtlpJsonLinesWriter
    from kilostar_otel.viewer.tree import build_groups, make_console, render_groups

    spans = receiver.spans()
    groups = build_groups(spans)
    console = make_console(out, color=False if args.no_color else None)
    console.print()
    render_groups(groups, console)
    path = args.out or DEFAULT_JSONL
    with OtlpJsonLinesWriter(path) as writer:
        for request in receiver.requests:
            writer.write(request)
    workflows = sum(len(g.traces) - 1 for g in groups)
    plan = next(c for c in calls if c.trace_id)
    print(
        f"\n{len(calls)} requests, {workflows} workflow{'' if workflows == 1 else 's'}, "
        f"{len(spans)} spans in "
        f"{sum(len(g.traces) for g in groups)} traces; written as OTLP/JSON lines to "
        f"{path}.\nNext: paste trace_id {plan.trace_id} into Jaeger (docs/jaeger.md), "
        f"or run 'kilostar-otel serve' and point your app at it.",
        file=out,
    )
    return 0
