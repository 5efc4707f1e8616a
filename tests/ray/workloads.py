"""Remote tasks and actors the Ray tests run on the real cluster.

Each call reports what the callee saw (ids, baggage, its span) so the tests can compare it with
what arrived at the OTLP receiver. Code that logs imports ``loguru.logger`` inside the call: a
module-level logger would be pickled with the driver's sinks instead of using the worker's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ray
from opentelemetry import baggage, trace

from kilostar_otel import get_request_id, get_trace_id
from kilostar_otel.integrations import ray as kray


def seen(tag: str = "") -> dict[str, Any]:
    """What the running call sees: ids, baggage, its span and that span's parent."""
    span = trace.get_current_span()
    context = span.get_span_context()
    parent = getattr(span, "parent", None)
    return {
        "tag": tag,
        "pid": os.getpid(),
        "request_id": get_request_id(),
        "trace_id": get_trace_id(),
        "baggage": dict(baggage.get_all()),
        "otel_trace_id": format(context.trace_id, "032x") if context.is_valid else "",
        "span_id": format(context.span_id, "016x") if context.is_valid else "",
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else "",
        "tracing": not isinstance(
            trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        ),
    }


@kray.remote
def step_a(x: int) -> dict[str, Any]:
    return {**seen("step_a"), "value": x * 2}


@kray.remote
def step_b(planner: Any, x: int) -> dict[str, Any]:
    # A task that calls an actor: the snapshot taken here carries this task's span onwards.
    inner = ray.get(planner.plan.remote(x))
    return {**seen("step_b"), "inner": inner}


@kray.remote
def fails() -> None:
    raise ValueError("step failed on purpose")


@kray.remote
def count(n: int) -> Iterator[dict[str, Any]]:
    """A generator task: Ray streams it (``num_returns="streaming"``)."""
    for i in range(n):
        yield seen(f"count-{i}")


with warnings.catch_warnings():
    # Deprecated in favour of "streaming", but still supported: the wrapper must keep working.
    warnings.filterwarnings("ignore", message="num_returns='dynamic' is deprecated")

    @kray.remote(num_returns="dynamic")
    def count_dynamic(n: int) -> Iterator[dict[str, Any]]:
        """A generator task with Ray's older dynamic returns: one ref to all the items' refs."""
        for i in range(n):
            yield seen(f"dynamic-{i}")


@kray.remote
def count_then_fail(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield seen(f"before-failure-{i}")
    raise ValueError("generator task failed on purpose")


@kray.remote
class Planner:
    """A sync actor (one call at a time)."""

    def plan(self, x: int) -> dict[str, Any]:
        from loguru import logger  # the worker's own logger, patched by setup_worker

        records: list[dict[str, Any]] = []
        sink = logger.add(lambda m: records.append(dict(m.record["extra"])), level="INFO")
        try:
            logger.info("planning {}", x)
        finally:
            logger.remove(sink)
        return {**seen("plan"), "log": records[0] if records else {}}

    def look(self) -> dict[str, Any]:
        return seen("look")

    def boom(self) -> None:
        raise ValueError("the planner failed on purpose")

    def steps(self, n: int) -> Iterator[dict[str, Any]]:
        for i in range(n):
            yield seen(f"steps-{i}")

    def pid(self) -> int:
        return os.getpid()


@kray.remote(max_concurrency=4)
class Threaded:
    """A threaded actor: up to four calls at once, each in its own thread."""

    def __init__(self) -> None:
        self._barrier = threading.Barrier(4, timeout=30)

    def together(self) -> dict[str, Any]:
        before = seen("together")
        self._barrier.wait()  # all four calls are inside their own snapshot at the same time
        return {"before": before, "after": seen("together")}


@kray.remote
class Streamer:
    """An async actor with coroutine and async-generator methods."""

    def __init__(self) -> None:
        self._arrived = 0
        self._all_in = asyncio.Event()

    async def look(self) -> dict[str, Any]:
        return seen("async-look")

    async def together(self, expected: int) -> dict[str, Any]:
        before = seen("async-together")
        self._arrived += 1
        if self._arrived >= expected:
            self._all_in.set()
        await asyncio.wait_for(self._all_in.wait(), 30)
        return {"before": before, "after": seen("async-together")}

    async def stream(self, n: int) -> AsyncIterator[dict[str, Any]]:
        for i in range(n):
            await asyncio.sleep(0)
            yield seen(f"stream-{i}")

    async def boom(self) -> None:
        raise KeyError("async failure on purpose")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@kray.remote
class Untraced:
    """Runs in a worker where the setup hook was switched off: tracing is never set up."""

    def __init__(self) -> None:
        self._collect = _Collect()
        logging.getLogger("kilostar_otel.integrations.ray").addHandler(self._collect)

    def look(self) -> dict[str, Any]:
        return seen("untraced")

    def warnings(self) -> list[str]:
        return list(self._collect.messages)


class ExplodingSnapshot(dict):  # type: ignore[type-arg]
    """A snapshot that raises from every lookup (a hostile caller's object)."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("hostile lookup")

    def __getitem__(self, key: Any) -> Any:
        raise RuntimeError("hostile lookup")


def user_setup_hook() -> None:
    """The job's own worker_process_setup_hook (see conftest): runs after setup_worker."""
    from opentelemetry import trace

    os.environ["KILOSTAR_TEST_USER_HOOK"] = (
        "ran after tracing"
        if not isinstance(
            trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        )
        else "ran before tracing"
    )


@kray.remote
def log_lines(tag: str) -> dict[str, Any]:
    """Log one stdlib and one loguru line in the worker; report the user hook's mark."""
    from loguru import logger  # the worker's own logger (see the module docstring)

    logging.getLogger("kilostar-test").warning("stdlib line %s", tag)
    logger.warning("loguru line {}", tag)
    return {"pid": os.getpid(), "user_hook": os.environ.get("KILOSTAR_TEST_USER_HOOK", "")}
