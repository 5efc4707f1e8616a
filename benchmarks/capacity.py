"""Export capacity: spans per second delivered to a real OTLP receiver, ours vs the SDK default.

Two arms, each a ``TracerProvider`` with ``KiloStarSpanProcessor`` exporting over OTLP/gRPC on
loopback to :class:`~kilostar_otel.viewer.receiver.OtlpReceiver` (in its own process, counting
spans per ``service.name``):

- ``sdk_default``: the SDK's ``BatchSpanProcessor`` with its defaults and the SDK's
  ``OTLPSpanExporter`` (what wiring the SDK by hand gives);
- ``kilostar``: ``configure(set_global=False)`` with its defaults.

Measured, alternating the arms at each step: the highest paced span rate (rates raised by 25% a
step until spans are lost, then two bisection steps between the last lossless rate and the
first lossy one) at which every span arrives; the delivered fraction of a tight loop of 100,000
spans; and the long loop: 1,000,000 spans per arm in a tight loop (with export disabled too),
each arm in its own process, the processes taking turns in segments of 100,000 spans, with
their rates and resident memory growth (peak and after). ``python -m benchmarks.capacity --json
out.json`` runs it alone.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Settings", "proc_status", "run", "stop_child", "write_results"]

ARMS = ("sdk_default", "kilostar")
#: The tight loop of ``memory_spans`` spans also runs with ``configure(exporter="none")``: the
#: same loop with export disabled, the rate the exporting arms are compared with.
TIGHT_ARMS = ("no_export", *ARMS)
WARMUP_SPANS = 2_000


@dataclass(frozen=True)
class Settings:
    """How long and how hard to push."""

    start_rate: float = 4000.0
    step: float = 1.25
    max_rate: float = 80000.0
    seconds: float = 5.0
    tight_spans: int = 100_000
    memory_spans: int = 1_000_000
    refine: int = 2
    #: The long loop runs in this many segments per arm, the arms' processes taking turns (in
    #: alternating order); the rate ratio is the median of the segments' ratios.
    long_segments: int = 10

    @classmethod
    def quick(cls) -> Settings:
        """A smoke run: a couple of low rates, small loops (seconds in all)."""
        return cls(
            start_rate=400.0,
            step=2.0,
            max_rate=800.0,
            seconds=0.4,
            tight_spans=2_000,
            memory_spans=5_000,
            refine=1,
            long_segments=2,
        )


# -- cores ----------------------------------------------------------------------------------------


def cores() -> tuple[set[int], set[int]] | None:
    """``(the loop's core, the other cores)`` where a process may place its threads (Linux, two
    or more CPUs allowed); None elsewhere, where the OS places every thread.

    The long loop runs alone on the first core; the receiver and each arm's other threads (the
    export worker, gRPC's) run on the others, so the scheduler cannot put them on the loop's core
    in some segments and not in others.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    return {allowed[0]}, set(allowed[1:])


def _run_on(cpus: set[int] | None) -> None:
    """Move the calling thread (and the threads it starts later) to ``cpus``."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


# -- the receiver, in its own process -------------------------------------------------------------


def _serve_receiver() -> None:
    """Child process: an OtlpReceiver that counts spans per service.name and keeps none."""
    placed = cores()
    _run_on(placed and placed[1])  # off the long loop's core
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from kilostar_otel.viewer.receiver import OtlpReceiver

    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def on_request(request: ExportTraceServiceRequest) -> None:
        # Count straight from the message gRPC decoded (no per-span Python objects): the
        # receiver shares the machine with the process measured, so it must cost little.
        arrived: Counter[str] = Counter()
        for resource_spans in request.resource_spans:
            service = next(
                (
                    kv.value.string_value
                    for kv in resource_spans.resource.attributes
                    if kv.key == "service.name"
                ),
                "",
            )
            arrived[service] += sum(len(scope.spans) for scope in resource_spans.scope_spans)
        with lock:
            counts.update(arrived)

    receiver = OtlpReceiver(on_request=on_request).start()
    print(receiver.grpc_endpoint, flush=True)
    try:
        for line in sys.stdin:
            command, _, name = line.strip().partition(" ")
            if command == "count":
                with lock:
                    print(counts.get(name, 0), flush=True)
    finally:
        receiver.stop()


class ReceiverProcess:
    """The receiver child process: ``count(service)`` asks how many spans arrived for it."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.capacity", "--receiver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self._proc.stdout is not None
        self.endpoint = self._proc.stdout.readline().strip()
        if not self.endpoint:
            self.close()
            raise RuntimeError("the OTLP receiver process did not start")

    def count(self, service: str) -> int:
        """Spans received so far for ``service``."""
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(f"count {service}\n")
        self._proc.stdin.flush()
        return int(self._proc.stdout.readline())

    def wait_for(self, service: str, expected: int, timeout: float = 15.0) -> int:
        """Wait until ``expected`` spans arrived (or nothing more arrives for 2 s); the count."""
        deadline = time.monotonic() + timeout
        last, still_since = -1, time.monotonic()
        while True:
            got = self.count(service)
            now = time.monotonic()
            if got >= expected or now > deadline:
                return got
            if got != last:
                last, still_since = got, now
            elif now - still_since > 2.0:
                return got
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the child (by its pid, through its stdin)."""
        stop_child(self._proc, timeout=10)


# -- the two arms ---------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """A built arm: a tracer, and how to flush, stop and read its drop counter (None: none)."""

    tracer: Any
    flush: Callable[[], object]
    shutdown: Callable[[], object]
    dropped: Callable[[], int | None]


def build(arm: str, service: str, endpoint: str) -> Pipeline:
    """Build ``arm`` exporting to ``endpoint`` under ``service.name = service``."""
    if arm in ("kilostar", "no_export"):
        from kilostar_otel import configure

        telemetry = (
            configure(service, endpoint=f"http://{endpoint}", protocol="grpc", set_global=False)
            if arm == "kilostar"
            else configure(service, exporter="none", set_global=False)
        )
        return Pipeline(
            telemetry.get_tracer("kilostar-bench"),
            telemetry.force_flush,
            telemetry.shutdown,
            lambda: telemetry.dropped_spans,
        )
    if arm == "sdk_default":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from kilostar_otel import KiloStarSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(KiloStarSpanProcessor())
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
        )
        return Pipeline(
            provider.get_tracer("kilostar-bench"),
            provider.force_flush,
            provider.shutdown,
            lambda: None,
        )
    raise ValueError(f"unknown arm {arm!r}")


@contextlib.contextmanager
def _request() -> Iterator[None]:
    from kilostar_otel import request_id_scope

    with request_id_scope("req-4bf92f3577b34da6a3ce929d0e0e4736"):
        yield


def _paced(pipeline: Pipeline, rate: float, seconds: float) -> tuple[int, float]:
    """Start and end spans at ``rate`` per second for ``seconds``; (spans, achieved rate)."""
    start_span = pipeline.tracer.start_as_current_span
    total = max(1, int(rate * seconds))
    produced = 0
    with _request():
        began = time.perf_counter()
        while produced < total:
            due = min(total, int((time.perf_counter() - began) * rate) + 1)
            while produced < due:
                with start_span("work", attributes={"work.item": produced}):
                    pass
                produced += 1
            time.sleep(0.0005)
        elapsed = time.perf_counter() - began
    return produced, produced / elapsed


def _tight(pipeline: Pipeline, spans: int) -> float:
    """Start and end ``spans`` spans as fast as possible; the seconds it took."""
    start_span = pipeline.tracer.start_as_current_span
    with _request():
        began = time.perf_counter()
        for n in range(spans):
            with start_span("work", attributes={"work.item": n}):
                pass
        return time.perf_counter() - began


def _finish(
    pipeline: Pipeline, receiver: ReceiverProcess, service: str, produced: int
) -> dict[str, Any]:
    pipeline.flush()
    delivered = receiver.wait_for(service, produced)
    dropped = pipeline.dropped()
    pipeline.shutdown()
    return {"produced": produced, "delivered": delivered, "counted_drops": dropped}


# -- memory, in a fresh process per arm -----------------------------------------------------------


def write_results(results: object, path: Path | None) -> None:
    """Write ``results`` as indented JSON to ``path``, or to standard output without one."""
    text = json.dumps(results, indent=2)
    if path is not None:
        path.write_text(text + "\n")
    else:
        print(text)


def stop_child(proc: subprocess.Popen[Any], timeout: float) -> None:
    """Stop a child that exits when its stdin closes; kill it (by pid) after ``timeout`` s."""
    with contextlib.suppress(Exception):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def proc_status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _long_child(arm: str, endpoint: str, service: str) -> None:
    """Child process: one arm of the long loop. Reads ``run N`` (answers the seconds N spans in
    a tight loop took) until ``finish`` (flushes, answers the resident memory and drop figures,
    stops); one JSON line per answer."""
    placed = cores()
    _run_on(placed and placed[1])  # the threads the pipeline starts stay off the loop's core
    pipeline = build(arm, service, endpoint)
    _tight(pipeline, WARMUP_SPANS)  # warm up: imports, channel, first batches
    pipeline.flush()
    _run_on(placed and placed[0])  # the loop, alone on its core
    gc.collect()
    reset = False
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        reset = True
    before = proc_status("VmRSS")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command, _, count = line.strip().partition(" ")
        if command == "run":
            print(json.dumps({"seconds": _tight(pipeline, int(count))}), flush=True)
            continue
        break
    pipeline.flush()
    peak = proc_status("VmHWM")
    after = proc_status("VmRSS")
    dropped = pipeline.dropped()
    pipeline.shutdown()
    print(
        json.dumps(
            {
                "rss_before": before,
                "peak_growth": max(0, peak - before) if reset else None,
                "rss_growth": after - before,
                "counted_drops": dropped,
            }
        ),
        flush=True,
    )


class _LongArm:
    """The process of one arm of the long loop."""

    def __init__(self, arm: str, endpoint: str) -> None:
        self.arm = arm
        self.service = f"long-{arm}"
        self.segments: list[float] = []
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.capacity", "--long", arm, endpoint, self.service],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self._answer()  # ready

    def _answer(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the long-loop process of {self.arm} exited")
        return dict(json.loads(line))

    def _say(self, command: str) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._answer()

    def run(self, spans: int) -> None:
        self.segments.append(float(self._say(f"run {spans}")["seconds"]))

    def finish(self) -> dict[str, Any]:
        try:
            return self._say("finish")
        finally:
            stop_child(self._proc, 60)


def _long_loop(receiver: ReceiverProcess, settings: Settings, quiet: bool) -> dict[str, Any]:
    """``memory_spans`` spans per arm in a tight loop, in ``long_segments`` segments, the arms'
    processes taking turns; per arm its rate, memory growth, drops and the spans that arrived."""
    arms = [_LongArm(arm, receiver.endpoint) for arm in TIGHT_ARMS]
    segment = settings.memory_spans // settings.long_segments
    spans = segment * settings.long_segments
    rows: dict[str, Any] = {}
    try:
        for index in range(settings.long_segments):
            for arm in arms if index % 2 == 0 else arms[::-1]:
                arm.run(segment)
            _say(
                quiet,
                f"  long loop, segment {index + 1}: "
                + " ".join(f"{a.arm} {segment / a.segments[-1]:,.0f}/s" for a in arms),
            )
    finally:
        for arm in arms:
            row = arm.finish()
            seconds = sum(arm.segments)
            row.update(
                arm=arm.arm, spans=spans, seconds=seconds, segments=arm.segments,
                rate=spans / seconds if seconds else 0.0,
            )  # fmt: skip
            if arm.arm != "no_export" and len(arm.segments) == settings.long_segments:
                row["delivered"] = (
                    receiver.wait_for(arm.service, spans + WARMUP_SPANS) - WARMUP_SPANS
                )
            rows[arm.arm] = row
    return rows


# -- the run --------------------------------------------------------------------------------------


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def run(settings: Settings, quiet: bool = False) -> dict[str, Any]:
    """Run every capacity measurement; a JSON-able dict of results."""
    # The SDK logs "Queue full, dropping Span" on drops; the counts below are what matters.
    otel_logger = logging.getLogger("opentelemetry")
    level = otel_logger.level
    otel_logger.setLevel(logging.ERROR)
    try:
        return _run(settings, quiet)
    finally:
        otel_logger.setLevel(level)


def _step(
    arm: str, rate: float, settings: Settings, receiver: ReceiverProcess, quiet: bool
) -> dict[str, Any]:
    """One paced run of ``arm`` at ``rate``; its row (lossless when every span arrived)."""
    service = f"paced-{arm}-{int(rate)}"
    pipeline = build(arm, service, receiver.endpoint)
    produced, achieved = _paced(pipeline, rate, settings.seconds)
    row: dict[str, Any] = {"arm": arm, "rate": rate, "achieved": achieved}
    row.update(_finish(pipeline, receiver, service, produced))
    row["lossless"] = row["delivered"] == produced
    _say(
        quiet,
        f"  paced {arm:12} {rate:8.0f}/s achieved {achieved:8.0f}/s "
        f"delivered {row['delivered']}/{produced}"
        + ("" if row["counted_drops"] is None else f" counted {row['counted_drops']}"),
    )
    return row


def _run(settings: Settings, quiet: bool) -> dict[str, Any]:
    receiver = ReceiverProcess()
    results: dict[str, Any] = {"settings": asdict(settings), "ladder": [], "tight": {}}
    try:
        good: dict[str, float] = dict.fromkeys(ARMS, 0.0)  # highest lossless rate asked for
        bad: dict[str, float] = {}  # lowest rate that lost spans
        producer_bound: list[str] = []
        active = list(ARMS)
        rate = settings.start_rate
        step = 0
        while active and rate <= settings.max_rate:
            for arm in list(active) if step % 2 == 0 else list(reversed(active)):
                row = _step(arm, rate, settings, receiver, quiet)
                results["ladder"].append(row)
                if not row["lossless"]:
                    bad[arm] = rate
                    active.remove(arm)  # drops began
                    continue
                good[arm] = rate
                if row["achieved"] < 0.9 * rate:
                    active.remove(arm)  # no drops, but the process cannot make spans faster
                    producer_bound.append(arm)
            rate *= settings.step
            step += 1
        # Narrow down where the drops begin: two bisection steps between the last lossless rate
        # and the first lossy one, for each arm that dropped (arms alternating).
        for _ in range(settings.refine):
            for arm in [a for a in ARMS if a in bad and good[a]]:
                middle = (good[arm] * bad[arm]) ** 0.5
                row = _step(arm, middle, settings, receiver, quiet)
                results["ladder"].append(row)
                if row["lossless"]:
                    good[arm] = middle
                else:
                    bad[arm] = middle
        lossless = [r for r in results["ladder"] if r["lossless"]]
        results["zero_drop_rate"] = {
            arm: max(
                (
                    r["achieved"]
                    for r in lossless
                    if r["arm"] == arm and r["rate"] < bad.get(arm, float("inf"))
                ),
                default=0.0,
            )
            for arm in ARMS
        }
        # Arms that never dropped: their zero-drop rate is a lower bound (the producer's limit).
        results["producer_bound"] = producer_bound

        for arm in ARMS:
            service = f"tight-{arm}"
            pipeline = build(arm, service, receiver.endpoint)
            seconds = _tight(pipeline, settings.tight_spans)
            row = {"seconds": seconds}
            row.update(_finish(pipeline, receiver, service, settings.tight_spans))
            results["tight"][arm] = row
            _say(quiet, f"  tight {arm:12} delivered {row['delivered']}/{settings.tight_spans}")

        results["memory"] = _long_loop(receiver, settings, quiet)
        placed = cores()
        results["cores"] = None if placed is None else [sorted(placed[0]), sorted(placed[1])]
    finally:
        receiver.close()
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.capacity [--quick] [--json PATH]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--long", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        _serve_receiver()
        return 0
    if args.long:
        logging.getLogger("opentelemetry").setLevel(logging.ERROR)
        _long_child(*args.long)
        return 0
    results = run(Settings.quick() if args.quick else Settings())
    write_results(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
