"""A mixed load for the collector tests: requests that start workflows, failing ones, plain ones.

Each request is a trace of two spans, its server span (``front``) and a handler span (``back``;
``front`` and ``back`` may be two services exporting through two different agents). A workflow
request starts ``workflow("plan")`` in the handler: its own trace of three spans (the root and a
step from each service). A failing request's handler raises, so its span has status ERROR.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

from opentelemetry.trace import SpanKind

from kilostar_otel import request_id_scope, workflow
from kilostar_otel.configure import Telemetry

from .conftest import Jaeger, JaegerTrace

REQUEST_SPANS = 2
WORKFLOW_SPANS = 3


@dataclass
class Load:
    """The trace ids the load made, by kind (32 hex each)."""

    workflows: dict[str, str] = field(default_factory=dict)  # request trace -> workflow trace
    errors: set[str] = field(default_factory=set)
    plain: set[str] = field(default_factory=set)

    def required(self) -> dict[str, int]:
        """Every trace tail sampling must keep, with its number of spans."""
        spans = {t: REQUEST_SPANS for t in [*self.workflows, *self.errors]}
        spans.update({t: WORKFLOW_SPANS for t in self.workflows.values()})
        return spans


def run_mixed_load(
    front: Telemetry,
    back: Telemetry,
    *,
    workflows: int,
    errors: int,
    plain: int,
    tag: str,
    seed: int = 7,
) -> Load:
    """Send the requests, interleaved in a seeded random order; flush both pipelines."""
    kinds = ["workflow"] * workflows + ["error"] * errors + ["plain"] * plain
    random.Random(seed).shuffle(kinds)
    front_tracer, back_tracer = front.get_tracer("load"), back.get_tracer("load")
    load = Load()
    for i, kind in enumerate(kinds):
        with (
            request_id_scope(f"req-{tag}-{i}"),
            front_tracer.start_as_current_span(f"GET /{kind}", kind=SpanKind.SERVER) as request,
        ):
            trace_id = format(request.get_span_context().trace_id, "032x")
            try:
                with back_tracer.start_as_current_span("handle"):
                    if kind == "error":
                        raise RuntimeError("the handler failed")
                    if kind == "workflow":
                        with workflow("plan", tracer_provider=front.tracer_provider) as wf:
                            with back_tracer.start_as_current_span("step in back"):
                                pass
                            with front_tracer.start_as_current_span("step in front"):
                                pass
                        load.workflows[trace_id] = wf.trace_id
            except RuntimeError:
                load.errors.add(trace_id)
        if kind == "plain":
            load.plain.add(trace_id)
    for telemetry in {id(front): front, id(back): back}.values():
        assert telemetry.force_flush(30_000)
        assert telemetry.dropped_spans == 0
    return load


def binomial_bounds(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    """``n*p`` plus or minus ``sigmas`` standard deviations of Binomial(n, p).

    A correct sampler falls outside 5 sigma with probability < 1e-6 (normal approximation).
    """
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sigmas * sd, n * p + sigmas * sd


def collect(
    jaeger: Jaeger, load: Load, service: str, settle: float, timeout: float = 60.0
) -> dict[str, JaegerTrace]:
    """Wait for every required trace to arrive whole, then ``settle`` more seconds (the rest of
    the sampling decisions), and return every trace of ``service`` that Jaeger has."""
    for trace_id, spans in load.required().items():
        jaeger.wait_trace(trace_id, spans=spans, timeout=timeout)
    time.sleep(settle)
    return {t.trace_id: t for t in jaeger.find(service, limit=10_000)}


def assert_sampled_as_configured(
    found: dict[str, JaegerTrace], load: Load, percentage: float
) -> int:
    """Every kept trace is whole; the plain ones kept are within the binomial bound."""
    required = load.required()
    assert set(found) >= set(required), "a workflow, its request or an error trace is missing"
    assert set(found) <= set(required) | load.plain, "Jaeger has traces the load did not make"
    for trace_id, trace in found.items():
        spans = required.get(trace_id, REQUEST_SPANS)
        assert len(trace.spans) == spans, f"{trace_id}: {len(trace.spans)} spans, want {spans}"
        assert trace.is_whole(), f"{trace_id} arrived in part"
    for request_trace, workflow_trace in load.workflows.items():
        root = found[workflow_trace].one("invoke_workflow plan")
        assert {(r["traceID"], r["refType"]) for r in root["references"]} == {
            (request_trace, "FOLLOWS_FROM")
        }
    for trace_id in load.errors:
        (handler,) = found[trace_id].by_name("handle")
        assert any(t["key"] == "error" and t["value"] is True for t in handler["tags"])
    kept = len(set(found) & load.plain)
    low, high = binomial_bounds(len(load.plain), percentage / 100)
    assert low <= kept <= high, f"{kept} of {len(load.plain)} plain traces kept at {percentage}%"
    return kept
