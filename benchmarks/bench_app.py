"""Whole application: the same Starlette app traced four ways, each in its own fresh process.

The app has two routes: ``/items`` makes three child spans, ``/plan`` makes the same three and
then starts a workflow (a new trace linked to the request) with two steps. Requests alternate
between the two, driven in-process by direct ASGI calls (no sockets, no server: what is measured
is the tracing, not HTTP). Every arm exports over OTLP/gRPC to one real
:class:`~kilostar_otel.viewer.receiver.OtlpReceiver` in another process, which counts what
arrives per ``service.name``. The arms:

- ``otel``: plain OpenTelemetry by hand: the SDK's ``BatchSpanProcessor`` and OTLP exporter,
  OTel's ASGI middleware, the workflow a new root span with a link to the request span;
- ``kilostar``: ``configure()`` + ``RequestIdMiddleware`` + OTel's ASGI middleware +
  ``workflow()``;
- ``logfire``: Pydantic Logfire (``logfire.configure(send_to_logfire=False)`` with the SDK's
  OTLP/gRPC exporter as its span processor, ``logfire.instrument_asgi``, ``logfire.span``), the
  request id from asgi-correlation-id put in baggage with ``logfire.set_baggage``, the workflow
  with ``@logfire.instrument(new_trace=True)``;
- ``correlation``: asgi-correlation-id + plain OpenTelemetry + ``BaggageSpanProcessor``, the id
  put in baggage by a few lines of middleware.

Every arm makes the same spans (the server span without OTel's per-message ``http send``/``http
receive`` spans, which Logfire leaves out by default). Measured per request, over the measured
requests after a warm-up: CPU of the whole process from the first request until the final
flush has exported everything (so the export threads are in it), CPU of the request thread
alone (``time.thread_time``), wall time, and resident memory; and, per arm and pass, the spans
created and the spans delivered. Within a pass the arms' processes take turns in rounds of a
few hundred requests (so every arm sees the same moments of a busy machine); the order
alternates from pass to pass; ratios are taken within a pass.
``python -m benchmarks.bench_app --json out.json`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.capacity import proc_status, stop_child, write_results

__all__ = ["ARMS", "LABELS", "METRICS", "Settings", "run", "run_pass", "spread", "summary"]

ARMS = ("otel", "kilostar", "logfire", "correlation")
LABELS = {
    "otel": "plain OpenTelemetry by hand",
    "kilostar": "kilostar-otel",
    "logfire": "Pydantic Logfire",
    "correlation": "asgi-correlation-id + OTel + BaggageSpanProcessor",
}
CHILDREN = ("load", "score", "render")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """How many passes and requests."""

    passes: int = 6
    requests: int = 3000
    warmup: int = 300
    round: int = 250  # requests per arm and turn

    @classmethod
    def quick(cls) -> Settings:
        """A smoke run: one pass, a few requests per arm."""
        return cls(passes=1, requests=40, warmup=10, round=20)


# -- the app, the same for every arm --------------------------------------------------------------

Span = Callable[[str], AbstractContextManager[Any]]


def make_app(span: Span, workflow: Span) -> Any:
    """The Starlette app: ``/items`` (three child spans) and ``/plan`` (the same, then a workflow
    with two steps); ``span(name)`` and ``workflow(name)`` are the arm's ways to make them."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def items(request: Request) -> PlainTextResponse:
        for name in CHILDREN:
            with span(name):
                pass
        return PlainTextResponse("ok")

    async def plan(request: Request) -> PlainTextResponse:
        for name in CHILDREN:
            with span(name):
                pass
        with workflow("plan"):
            with span("step 1"):
                pass
            with span("step 2"):
                pass
        return PlainTextResponse("planned")

    return Starlette(routes=[Route("/items", items), Route("/plan", plan)])


#: Spans per request of each route: the server span, three children (and a workflow root and
#: two steps on ``/plan``).
SPANS_PER_ROUTE = {"/items": 4, "/plan": 7}
PATHS = tuple(SPANS_PER_ROUTE)


@dataclass
class Built:
    """A built arm: the ASGI app to call, how to flush and stop, and its created-span count."""

    app: Any
    flush: Callable[[], object]
    shutdown: Callable[[], object]
    created: Callable[[], int]


def _counter() -> Any:
    """A span processor that counts the spans that end (the spans created)."""
    from opentelemetry.sdk.trace import SpanProcessor

    class Created(SpanProcessor):
        count = 0

        def on_end(self, span: Any) -> None:
            self.count += 1

    return Created()


def _sdk_batch(endpoint: str) -> Any:
    """The SDK's batch processor (defaults) with the SDK's OTLP/gRPC exporter."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))


def _otel_middleware(app: Any) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app, exclude_spans=["receive", "send"])


def _by_hand_workflow(tracer: Any) -> Span:
    """A workflow written with the SDK: a new root span (keeping baggage) linked to the request."""
    from opentelemetry import trace
    from opentelemetry.trace import INVALID_SPAN, Link

    @contextlib.contextmanager
    def workflow(name: str) -> Iterator[Any]:
        current = trace.get_current_span().get_span_context()
        links = [Link(current)] if current.is_valid else None
        with tracer.start_as_current_span(
            f"workflow {name}", context=trace.set_span_in_context(INVALID_SPAN), links=links
        ) as root:
            yield root

    return workflow


def _sdk_provider(service: str, *first: Any) -> tuple[Any, Any]:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    for processor in first:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider, provider.get_tracer("bench-app")


def _build_otel(service: str, endpoint: str) -> Built:
    counter = _counter()
    provider, tracer = _sdk_provider(service)
    provider.add_span_processor(_sdk_batch(endpoint))
    provider.add_span_processor(counter)
    app = make_app(tracer.start_as_current_span, _by_hand_workflow(tracer))
    return Built(
        _otel_middleware(app), provider.force_flush, provider.shutdown, lambda: counter.count
    )


def _build_kilostar(service: str, endpoint: str) -> Built:
    from opentelemetry import trace

    from kilostar_otel import configure, workflow
    from kilostar_otel.integrations.asgi import RequestIdMiddleware

    telemetry = configure(service, endpoint=f"http://{endpoint}", protocol="grpc")
    counter = _counter()
    telemetry.tracer_provider.add_span_processor(counter)
    tracer = trace.get_tracer("bench-app")
    app = make_app(tracer.start_as_current_span, workflow)
    return Built(
        RequestIdMiddleware(_otel_middleware(app)),
        telemetry.force_flush,
        telemetry.shutdown,
        lambda: counter.count,
    )


class _IdToBaggage:
    """ASGI middleware inside the server span: the correlation id (set by asgi-correlation-id
    outside) as an attribute of the server span and, for every span below it, in baggage."""

    def __init__(self, app: Any, bind: Callable[[str], AbstractContextManager[Any]]) -> None:
        self.app = app
        self.bind = bind

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from asgi_correlation_id import correlation_id
        from opentelemetry import trace

        request_id = correlation_id.get()
        if scope["type"] != "http" or not request_id:
            await self.app(scope, receive, send)
            return
        trace.get_current_span().set_attribute("request_id", request_id)
        with self.bind(request_id):
            await self.app(scope, receive, send)


def _build_logfire(service: str, endpoint: str) -> Built:
    import logfire
    from asgi_correlation_id import CorrelationIdMiddleware

    counter = _counter()
    logfire.configure(
        send_to_logfire=False,
        service_name=service,
        console=False,
        metrics=False,  # no arm records metrics
        additional_span_processors=[_sdk_batch(endpoint), counter],
    )

    def bind(request_id: str) -> AbstractContextManager[None]:
        return logfire.set_baggage(request_id=request_id)

    app = make_app(logfire.span, _logfire_workflow(logfire))
    wrapped = CorrelationIdMiddleware(logfire.instrument_asgi(_IdToBaggage(app, bind)))
    return Built(wrapped, logfire.force_flush, logfire.shutdown, lambda: counter.count)


def _logfire_workflow(logfire: Any) -> Span:
    """A workflow the Logfire way: ``@logfire.instrument(new_trace=True)`` on the function that
    runs it. The app's ``with workflow(name):`` body runs inside that function: the decorated
    generator yields once, the body runs, then the generator finishes and its span ends."""

    @logfire.instrument("workflow {name}", new_trace=True, allow_generator=True)
    def run(name: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def workflow(name: str) -> Iterator[None]:
        steps = run(name)
        next(steps)
        try:
            yield
        finally:
            steps.close()

    return workflow


def _build_correlation(service: str, endpoint: str) -> Built:
    from asgi_correlation_id import CorrelationIdMiddleware
    from opentelemetry import baggage
    from opentelemetry.context import attach, detach
    from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor

    counter = _counter()
    provider, tracer = _sdk_provider(service, BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
    provider.add_span_processor(_sdk_batch(endpoint))
    provider.add_span_processor(counter)

    @contextlib.contextmanager
    def bind(request_id: str) -> Iterator[None]:
        token = attach(baggage.set_baggage("request_id", request_id))
        try:
            yield
        finally:
            detach(token)

    app = make_app(tracer.start_as_current_span, _by_hand_workflow(tracer))
    wrapped = CorrelationIdMiddleware(_otel_middleware(_IdToBaggage(app, bind)))
    return Built(wrapped, provider.force_flush, provider.shutdown, lambda: counter.count)


BUILDERS: dict[str, Callable[[str, str], Built]] = {
    "otel": _build_otel,
    "kilostar": _build_kilostar,
    "logfire": _build_logfire,
    "correlation": _build_correlation,
}


# -- driving the app, in the arm's process --------------------------------------------------------


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench.local"), (b"user-agent", b"bench-app")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _drive(app: Any, requests: int, start: int = 0) -> int:
    """Send ``requests`` requests, alternating the routes (the ``start``-th first); how many
    were answered 200."""
    scopes = [_scope(path) for path in PATHS]
    body = {"type": "http.request", "body": b"", "more_body": False}
    ok = 0

    async def receive() -> dict[str, Any]:
        return body

    for n in range(requests):
        statuses: list[int] = []

        async def send(message: MutableMapping[str, Any], statuses: list[int] = statuses) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(dict(scopes[(start + n) % 2]), receive, send)
        ok += statuses == [200]
    return ok


def serve(arm: str, service: str, endpoint: str, warmup: int) -> None:
    """Child process: build ``arm``, warm it up, then obey the parent, one line each:
    ``run N`` drives N requests and answers their figures; ``finish`` flushes, answers the
    totals and stops."""
    import logging

    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
    built = BUILDERS[arm](service, endpoint)
    loop = asyncio.new_event_loop()
    answered = loop.run_until_complete(_drive(built.app, warmup))
    built.flush()
    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
    rss_before = proc_status("VmRSS")
    requests, cpu = 0, time.process_time()
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, count = line.strip().partition(" ")
        if command == "run":
            thread, wall = time.thread_time(), time.perf_counter()
            answered += loop.run_until_complete(_drive(built.app, int(count), start=requests))
            thread, wall = time.thread_time() - thread, time.perf_counter() - wall
            requests += int(count)
            print(json.dumps({"thread_cpu_s": thread, "wall_s": wall}), flush=True)
        elif command == "finish":
            break
    built.flush()  # every span of the measured requests exported: their export CPU counts
    cpu = time.process_time() - cpu
    rss_after, peak = proc_status("VmRSS"), proc_status("VmHWM")
    loop.close()
    total = requests + warmup
    print(
        json.dumps(
            {
                "arm": arm,
                "service": service,
                "requests": requests,
                "answered": answered,
                "created": built.created(),
                "expected": total // 2 * sum(SPANS_PER_ROUTE.values())
                + total % 2 * SPANS_PER_ROUTE[PATHS[0]],
                "cpu_s": cpu,
                "rss": rss_after,
                "rss_growth": rss_after - rss_before,
                "peak_growth": max(0, peak - rss_before),
            }
        ),
        flush=True,
    )
    built.shutdown()


# -- the run: a receiver process, one fresh process per arm and pass ------------------------------


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LOGFIRE_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


class ArmProcess:
    """One arm in its own fresh interpreter, driven line by line (see :func:`serve`)."""

    def __init__(self, arm: str, service: str, endpoint: str, warmup: int) -> None:
        self.arm = arm
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_app",
                "--child",
                arm,
                service,
                endpoint,
                str(warmup),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=_environment(),
        )
        self._read()  # "ready": built and warmed up

    def _read(self) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=60)
            raise RuntimeError(f"arm {self.arm} exited with {self._proc.returncode}")
        return line

    def _ask(self, command: str) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return dict(json.loads(self._read()))

    def run(self, requests: int) -> dict[str, Any]:
        """Drive ``requests`` requests; their request-thread CPU and wall time."""
        return self._ask(f"run {requests}")

    def finish(self) -> dict[str, Any]:
        """Flush and stop; the totals (process CPU, spans created, memory)."""
        try:
            return self._ask("finish")
        finally:
            self.close()

    def close(self) -> None:
        """Stop the child (by its pid, through its stdin)."""
        stop_child(self._proc, timeout=60)


def run_pass(
    arms: list[str], endpoint: str, settings: Settings, tag: str
) -> dict[str, dict[str, Any]]:
    """One pass: a fresh process per arm, the measured requests in rounds of
    ``settings.round`` with the arms taking turns (so each round's arms run moments apart);
    per arm its totals, with the request-thread CPU and wall time summed over the rounds."""
    processes = []
    try:
        for arm in arms:
            processes.append(ArmProcess(arm, f"app-{arm}-{tag}", endpoint, settings.warmup))
        sums = {arm: {"thread_cpu_s": 0.0, "wall_s": 0.0} for arm in arms}
        done = 0
        while done < settings.requests:
            count = min(settings.round, settings.requests - done)
            for process in processes:
                for key, value in process.run(count).items():
                    sums[process.arm][key] += value
            done += count
            processes.reverse()  # the next round runs the arms the other way round
        return {p.arm: {**p.finish(), **sums[p.arm]} for p in processes}
    finally:
        for process in processes:
            process.close()


def order(passes: int, arms: tuple[str, ...] = ARMS) -> list[list[str]]:
    """The arms' order in each pass: forwards, then backwards, rotating one step every two
    passes, so no arm always runs first, last, or next to the same neighbour."""
    orders = []
    for n in range(passes):
        shift = (n // 2) % len(arms)
        arms_now = list(arms[shift:] + arms[:shift])
        orders.append(arms_now if n % 2 == 0 else arms_now[::-1])
    return orders


def run(settings: Settings, quiet: bool = False, arms: tuple[str, ...] = ARMS) -> dict[str, Any]:
    """Every pass of every arm against one receiver; a JSON-able dict of results."""
    from benchmarks.capacity import ReceiverProcess

    receiver = ReceiverProcess()
    rows: list[dict[str, Any]] = []
    try:
        for n, in_order in enumerate(order(settings.passes, arms)):
            measured = run_pass(in_order, receiver.endpoint, settings, str(n))
            for arm in in_order:
                row = measured[arm]
                row["pass"] = n
                row["delivered"] = receiver.wait_for(row["service"], row["created"])
                row["lossless"] = row["delivered"] == row["created"] == row["expected"]
                rows.append(row)
                if not quiet:
                    per = 1e6 / settings.requests
                    print(
                        f"  app pass {n + 1}/{settings.passes} {arm:12} "
                        f"thread {row['thread_cpu_s'] * per:7.1f} µs  "
                        f"cpu {row['cpu_s'] * per:7.1f} µs  wall {row['wall_s'] * per:7.1f} µs  "
                        f"delivered {row['delivered']}/{row['created']}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        receiver.close()
    return {"settings": asdict(settings), "rows": rows}


#: What is measured per request, in seconds: request-thread CPU, process CPU, wall time.
METRICS = ("thread_cpu_s", "cpu_s", "wall_s")


def spread(values: list[float]) -> tuple[float, float] | None:
    """The quartiles of ``values`` (four or more), else their range; None when empty."""
    if not values:
        return None
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        return (q[0], q[2])
    return (min(values), max(values))


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Per arm: medians per request over its lossless passes, spans created and delivered,
    lossy passes; per other arm: kilostar ÷ arm per metric, the median of the per-pass ratios
    (passes where both were lossless) with their spread."""
    rows = results["rows"]
    requests = results["settings"]["requests"]
    by_pass = {(r["arm"], r["pass"]): r for r in rows}
    passes = sorted({r["pass"] for r in rows})
    arms: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        good = [r for r in mine if r["lossless"]]
        entry: dict[str, Any] = {
            "passes": len(mine),
            "lossy_passes": [r["pass"] for r in mine if not r["lossless"]],
            "created": sum(r["created"] for r in mine),
            "delivered": sum(r["delivered"] for r in mine),
            "rss": statistics.median(r["rss"] for r in mine) if mine else 0,
            "peak_growth": statistics.median(r["peak_growth"] for r in mine) if mine else 0,
        }
        for metric in METRICS:
            values = [r[metric] / requests for r in good]
            entry[metric] = statistics.median(values) if values else None
            entry[metric + "_spread"] = spread(values)
        arms[arm] = entry
    ratios: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        if arm == "kilostar":
            continue
        ratios[arm] = {}
        for metric in METRICS:
            pairs = [
                ours[metric] / theirs[metric]
                for n in passes
                if (ours := by_pass.get(("kilostar", n))) is not None
                and (theirs := by_pass.get((arm, n))) is not None
                and ours["lossless"]
                and theirs["lossless"]
                and theirs[metric] > 0
            ]
            ratios[arm][metric] = {
                "ratio": statistics.median(pairs) if pairs else None,
                "spread": spread(pairs),
                "passes": len(pairs),
            }
    return {"arms": arms, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.bench_app [--quick] [--json PATH]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument("--passes", type=int, help="passes (default 6)")
    parser.add_argument("--requests", type=int, help="measured requests per arm and pass")
    parser.add_argument("--arms", help="a comma-separated subset of the arms (for profiling)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        arm, service, endpoint, warmup = args.child
        serve(arm, service, endpoint, int(warmup))
        return 0
    settings = Settings.quick() if args.quick else Settings()
    if args.passes or args.requests:
        settings = Settings(
            passes=args.passes or settings.passes,
            requests=args.requests or settings.requests,
            warmup=settings.warmup,
        )
    arms = tuple(args.arms.split(",")) if args.arms else ARMS
    results = run(settings, arms=arms)
    write_results(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
