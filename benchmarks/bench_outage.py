"""Request latency while the OTLP back end is up, refused, or a black hole, as ratios to "up".

A traced service (uvicorn + Starlette, OpenTelemetry's ASGI middleware, ``RequestIdMiddleware``, a
workflow with two steps: four spans a request) runs in its own interpreter with the global
``configure()`` and its defaults (batch queue 8,192, 5 s delay, 10 s export timeout), exporting
over OTLP to the embedded receiver on 127.0.0.1. One client sends sequential requests; between
rounds the back end is switched on the same port between

* ``up``: the receiver runs (the round checks that spans really arrived);
* ``refused``: nothing listens (connection refused);
* ``blackhole``: a socket accepts connections and never answers (each export waits its timeout).

Rounds alternate the arms so that drift of the machine does not favour one. Run with
``python -m benchmarks.bench_outage`` (``--help`` for sizes; ``--json PATH`` writes the results;
``--quick`` checks the tooling).

``--rss`` measures memory instead: with the back end refused, a process ends 10,000 spans with
a 64 KiB attribute each, once with the byte budget lifted (only the 8,192-span queue bounds it,
as before ``max_queue_bytes``) and once with the default budget (64 MiB); it reports the peak
RSS, the spans dropped and the bytes queued.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

ARMS = ("up", "refused", "blackhole")
PROTOCOLS = ("grpc", "http/protobuf")
SPANS_PER_REQUEST = 4


# -- the traced service (``--serve``), in its own interpreter -----------------------------------


def serve(endpoint: str, protocol: str) -> None:
    """Run the traced service; print ``{"port": N}`` once it listens."""
    import asyncio
    import threading

    import uvicorn
    from opentelemetry import trace
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    import kilostar_otel
    from kilostar_otel.integrations.asgi import RequestIdMiddleware

    telemetry = kilostar_otel.configure(
        "bench-outage",
        endpoint=endpoint,
        protocol=protocol,  # type: ignore[arg-type]
    )
    tracer = trace.get_tracer("bench-outage")

    async def work(request: Request) -> JSONResponse:
        async with kilostar_otel.workflow("bench"):
            for step in ("plan", "act"):
                with tracer.start_as_current_span(step):
                    await asyncio.sleep(0)
        return JSONResponse({"request_id": kilostar_otel.get_request_id()})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse({"dropped": telemetry.dropped_spans})

    app = OpenTelemetryMiddleware(
        Starlette(
            routes=[Route("/work", work), Route("/stats", stats)],
            middleware=[Middleware(RequestIdMiddleware)],
        ),
        exclude_spans=["receive", "send"],
        excluded_urls="stats",
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("uvicorn did not start")
        time.sleep(0.01)
    print(json.dumps({"port": server.servers[0].sockets[0].getsockname()[1]}), flush=True)
    thread.join()


# -- the back end, switched between arms on one port ----------------------------------------------


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def backend(arm: str, grpc_port: int, http_port: int) -> Iterator[Any]:
    """The back end for one round: a receiver, nothing, or sockets that never answer."""
    if arm == "up":
        from kilostar_otel.viewer import OtlpReceiver

        with OtlpReceiver(grpc_port=grpc_port, http_port=http_port) as receiver:
            yield receiver
    elif arm == "refused":
        yield None
    else:
        holes = []
        for port in (grpc_port, http_port):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(1024)  # the kernel completes handshakes; nobody ever reads
            holes.append(sock)
        try:
            yield None
        finally:
            for sock in holes:
                sock.close()


# -- the client ----------------------------------------------------------------------------------


def run_protocol(protocol: str, requests: int, rounds: int, warmup: int) -> dict[str, Any]:
    """Latencies of every arm for one protocol; one service process serves all rounds."""
    import httpx

    grpc_port, http_port = _free_port(), _free_port()
    endpoint = f"http://127.0.0.1:{grpc_port if protocol == 'grpc' else http_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    latencies: dict[str, list[float]] = {arm: [] for arm in ARMS}
    received = 0
    # The exporter's retry warnings go to a file, shown only if the service fails to start.
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_outage", "--serve", endpoint, protocol],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                errors.seek(0)
                raise RuntimeError(f"the service did not start:\n{errors.read()[-4000:]}")
            url = f"http://127.0.0.1:{json.loads(line)['port']}/work"
            with httpx.Client(timeout=30) as client:

                def one(n: int) -> float:
                    start = time.perf_counter()
                    response = client.get(url, headers={"X-Request-Id": f"req-b-{n}"})
                    elapsed = time.perf_counter() - start
                    if response.status_code != 200:
                        raise RuntimeError(f"request failed with {response.status_code}")
                    return elapsed

                order = list(ARMS)
                for _ in range(rounds):
                    for arm in order:
                        with backend(arm, grpc_port, http_port) as receiver:
                            for n in range(warmup):
                                one(n)
                            latencies[arm].extend(one(n) for n in range(requests))
                            if receiver is not None:
                                received += _wait_for_spans(receiver)
                    order.reverse()
                dropped = client.get(url.replace("/work", "/stats")).json()["dropped"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {"latencies": latencies, "received_up": received, "dropped": dropped}


def _wait_for_spans(receiver: Any, timeout: float = 15.0) -> int:
    """Proof that an "up" round was up: spans arrive. Returns how many had arrived by then."""
    deadline = time.monotonic() + timeout
    while not receiver.spans():
        if time.monotonic() > deadline:
            raise RuntimeError("an 'up' round exported nothing: the back end was not reached")
        time.sleep(0.05)
    return len(receiver.spans())


def summarize(latencies: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median and p99 (ms) of each arm, and their ratios to ``up``."""
    summary: dict[str, dict[str, float]] = {}
    for arm, values in latencies.items():
        ordered = sorted(values)
        summary[arm] = {
            "n": len(values),
            "median_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        }
    up = summary["up"]
    for row in summary.values():
        row["median_ratio"] = row["median_ms"] / up["median_ms"]
        row["p99_ratio"] = row["p99_ms"] / up["p99_ms"]
    return summary


# -- memory with large spans (``--rss``) -------------------------------------------------------

RSS_SPANS = 10_000
RSS_ATTRIBUTE_BYTES = 64 * 1024
NO_BYTE_BUDGET = 1 << 62


def rss_child(budget: int) -> None:
    """End large spans with the back end refused; print peak RSS, drops and queued bytes."""
    import resource

    from opentelemetry import trace

    import kilostar_otel

    telemetry = kilostar_otel.configure(
        "bench-rss",
        endpoint=f"http://127.0.0.1:{_free_port()}/v1/traces",
        protocol="http/protobuf",
        max_queue_bytes=budget,
        timeout=1.0,
    )
    tracer = trace.get_tracer("bench-rss")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for n in range(RSS_SPANS):
        span = tracer.start_span("large")
        span.set_attribute("payload", f"{n:08d}" + "x" * (RSS_ATTRIBUTE_BYTES - 8))
        span.end()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "rss_before_mib": before / 1024,
                "rss_peak_mib": peak / 1024,
                "dropped": telemetry.dropped_spans,
                "queued_mib": telemetry.queued_bytes / 2**20,
            }
        ),
        flush=True,
    )
    telemetry.shutdown(100)


def run_rss() -> dict[str, Any]:
    """Peak RSS without and with the byte budget, each in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KILOSTAR_"))}
    results: dict[str, Any] = {}
    for arm, budget in (("no byte budget", NO_BYTE_BUDGET), ("64 MiB (default)", 64 << 20)):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_outage", "--rss-child", str(budget)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results[arm] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n{RSS_SPANS:,} spans with a 64 KiB attribute, back end refused")
    print(f"  {'queue bound':<18} {'peak RSS MiB':>12} {'dropped':>8} {'queued MiB':>10}")
    for arm, row in results.items():
        print(
            f"  {arm:<18} {row['rss_peak_mib']:>12.0f} {row['dropped']:>8} "
            f"{row['queued_mib']:>10.1f}"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="timed requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (each runs every arm)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests per round")
    parser.add_argument("--protocol", choices=[*PROTOCOLS, "both"], default="both")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument(
        "--quick", action="store_true", help="one short round (to check the tooling)"
    )
    parser.add_argument(
        "--serve", nargs=2, metavar=("ENDPOINT", "PROTOCOL"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--rss", action="store_true", help="peak RSS with 64 KiB spans, without/with byte budget"
    )
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(*args.serve)
        return 0
    if args.rss_child:
        rss_child(args.rss_child)
        return 0
    if args.rss:
        rss = run_rss()
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"rss": rss}, out, indent=2)
        return 0
    if args.quick:
        args.requests, args.rounds, args.warmup = 50, 1, 5
    results: dict[str, Any] = {}
    for protocol in PROTOCOLS if args.protocol == "both" else (args.protocol,):
        run = run_protocol(protocol, args.requests, args.rounds, args.warmup)
        summary = summarize(run["latencies"])
        results[protocol] = {
            "arms": summary,
            "spans_received_while_up": run["received_up"],
            "spans_dropped": run["dropped"],
            "spans_per_request": SPANS_PER_REQUEST,
        }
        print(f"\nOTLP {protocol}: request latency, back end up vs down")
        print(
            f"  {'arm':<10} {'n':>6} {'median ms':>10} {'p99 ms':>9} {'median x':>9} {'p99 x':>7}"
        )
        for arm, row in summary.items():
            print(
                f"  {arm:<10} {row['n']:>6.0f} {row['median_ms']:>10.3f} {row['p99_ms']:>9.3f} "
                f"{row['median_ratio']:>9.2f} {row['p99_ratio']:>7.2f}"
            )
        print(
            f"  spans at the receiver in the 'up' rounds: {run['received_up']} (every round "
            f"> 0); dropped by the service (queue full): {run['dropped']}"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
