"""``kilostar-otel serve``: the embedded OTLP receiver as a viewer that prints complete traces."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from types import FrameType
from typing import IO

from kilostar_otel.viewer.tree import TraceGroup, TraceGrouper, make_console, render_groups

__all__ = ["run_serve"]

_TICK = 0.1


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_serve(
    args: argparse.Namespace,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Receive OTLP on ``args.host`` until Ctrl-C/SIGTERM, printing each complete request group.

    A stop signal only sets a flag: the loop then stops the receivers (no new requests are
    acknowledged), and prints and writes everything already acknowledged before returning.
    """
    from kilostar_otel.viewer.otlp_json import OtlpJsonLinesWriter
    from kilostar_otel.viewer.receiver import OtlpReceiver, ReceivedSpan

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    console = make_console(out, color=False if args.no_color else None)
    grouper = TraceGrouper(settle=args.settle, max_wait=args.max_wait)
    lock = threading.Lock()

    def on_spans(spans: list[ReceivedSpan]) -> None:
        with lock:
            grouper.add(spans, time.monotonic())

    receiver = OtlpReceiver(
        host=args.host, grpc_port=args.grpc_port, http_port=args.http_port, on_spans=on_spans
    )
    try:
        receiver.start()
    except OSError as exc:
        print(
            f"kilostar-otel serve: error: cannot listen on {args.host} "
            f"(gRPC port {args.grpc_port}, HTTP port {args.http_port}): {exc}",
            file=err,
        )
        return 1
    writer = OtlpJsonLinesWriter(args.out) if args.out else None
    written = 0
    printed = 0

    def emit(groups: list[TraceGroup]) -> None:
        nonlocal printed
        if groups:
            if printed:
                console.print()
            render_groups(groups, console)
            out.flush()
            printed += len(groups)

    def write_new() -> None:
        nonlocal written
        # The grouper got every span through on_spans: the receiver need not keep them.
        if writer is None:
            receiver.clear()
            return
        for request in receiver.drain_requests():
            writer.write(request)
            written += 1

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for number in _STOP_SIGNALS:
            previous[number] = signal.getsignal(number)
            signal.signal(number, on_signal)
    print(
        f"kilostar-otel serve: OTLP gRPC on {receiver.grpc_endpoint}, "
        f"OTLP HTTP on {receiver.http_endpoint}/v1/traces. Ctrl-C to stop.",
        file=err,
        flush=True,
    )
    try:
        while not stop.wait(_TICK):
            with lock:
                groups = grouper.pop_ready(time.monotonic())
            emit(groups)
            write_new()
    except KeyboardInterrupt:
        pass  # a Ctrl-C that arrived before the handler was installed
    finally:
        receiver.stop()  # stop acknowledging; what was acknowledged is drained below
    with lock:
        groups = grouper.pop_ready(time.monotonic(), everything=True)
    emit(groups)
    write_new()
    if writer is not None:
        writer.close()
    for number, handler in previous.items():  # a second signal during the drain changed nothing
        signal.signal(number, handler)
    suffix = f"; {written} OTLP/JSON lines in {args.out}" if writer is not None else ""
    print(f"kilostar-otel serve: stopped after {printed} trace group(s){suffix}.", file=err)
    return 0
