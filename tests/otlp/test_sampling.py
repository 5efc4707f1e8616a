"""LinkAwareSampler: a workflow root is kept exactly when the request that started it is kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import attach, detach
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags

from kilostar_otel import KiloStarSpanProcessor, workflow
from kilostar_otel.sampling import LinkAwareSampler, sampler_from_env, sampler_from_name


class Pipeline:
    """A private provider with ``sampler``, the KiloStar processor and an in-memory exporter."""

    def __init__(self, sampler: Sampler) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=sampler)
        self.provider.add_span_processor(KiloStarSpanProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("sampling-test")

    def exported(self) -> set[str]:
        return {s.name for s in self.exporter.get_finished_spans()}

    def request_with_workflow(self, remote_sampled: bool | None) -> tuple[bool, bool]:
        """One request (remote parent sampled/unsampled, or none) that starts a workflow.

        Returns whether the request span and the workflow root were sampled.
        """
        ctx = None
        if remote_sampled is not None:
            flags = TraceFlags(TraceFlags.SAMPLED if remote_sampled else TraceFlags.DEFAULT)
            parent = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=flags)
            ctx = trace.set_span_in_context(NonRecordingSpan(parent))
        token = attach(ctx) if ctx is not None else None
        try:
            with self.tracer.start_as_current_span("request") as request:
                with workflow("wf", tracer_provider=self.provider) as wf:
                    root_sampled = wf.span.get_span_context().trace_flags.sampled
                    with self.tracer.start_as_current_span("step") as step:
                        assert step.get_span_context().trace_flags.sampled == root_sampled
        finally:
            if token is not None:
                detach(token)
        return request.get_span_context().trace_flags.sampled, root_sampled


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    p = Pipeline(LinkAwareSampler(ParentBasedTraceIdRatio(0.0)))
    yield p
    p.provider.shutdown()


def test_a_sampled_request_keeps_its_workflow_even_when_roots_are_not_sampled(
    pipeline: Pipeline,
) -> None:
    # Ratio 0: no fresh root is ever sampled, but this request was sampled upstream.
    assert pipeline.request_with_workflow(remote_sampled=True) == (True, True)
    assert pipeline.exported() == {"request", "invoke_workflow wf", "step"}
    root = next(s for s in pipeline.exporter.get_finished_spans() if s.name.startswith("invoke"))
    # The attributes the workflow passes at start survive the sampler.
    assert root.attributes is not None
    assert root.attributes["kilostar.workflow.name"] == "wf"
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"


def test_an_unsampled_request_drops_its_workflow_even_when_roots_are_sampled() -> None:
    p = Pipeline(LinkAwareSampler(ParentBased(ALWAYS_ON)))
    assert p.request_with_workflow(remote_sampled=False) == (False, False)
    assert p.exported() == set()
    # Without a remote parent, the request root is sampled (ALWAYS_ON), and so is its workflow.
    assert p.request_with_workflow(remote_sampled=None) == (True, True)


def test_plain_parent_based_sampling_breaks_the_link_that_link_aware_keeps() -> None:
    plain = Pipeline(ParentBasedTraceIdRatio(0.0))
    assert plain.request_with_workflow(remote_sampled=True) == (True, False)
    plain = Pipeline(ParentBased(ALWAYS_ON))
    assert plain.request_with_workflow(remote_sampled=False) == (False, True)


@settings(max_examples=60, deadline=None)
@given(ratio=st.floats(0.0, 1.0), remote=st.sampled_from([True, False, None]))
def test_workflow_decision_always_equals_its_request_decision(
    ratio: float, remote: bool | None
) -> None:
    p = Pipeline(LinkAwareSampler(ParentBasedTraceIdRatio(ratio)))
    request_sampled, workflow_sampled = p.request_with_workflow(remote)
    assert workflow_sampled == request_sampled
    p.provider.shutdown()


def test_spans_with_a_parent_and_roots_without_links_follow_the_root_sampler() -> None:
    p = Pipeline(LinkAwareSampler(TraceIdRatioBased(0.0)))
    with p.tracer.start_as_current_span("lonely root") as root:
        pass
    assert not root.get_span_context().trace_flags.sampled
    # An invalid link (e.g. started outside any span) does not count as a link.
    with p.tracer.start_as_current_span(
        "invalid link", links=[Link(trace.INVALID_SPAN_CONTEXT)]
    ) as span:
        pass
    assert not span.get_span_context().trace_flags.sampled


def test_a_root_linked_to_several_spans_is_kept_if_any_of_them_was() -> None:
    p = Pipeline(LinkAwareSampler(ALWAYS_OFF))
    unsampled = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    sampled = SpanContext(3, 4, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with p.tracer.start_as_current_span("both", links=[Link(unsampled), Link(sampled)]) as both:
        pass
    with p.tracer.start_as_current_span("neither", links=[Link(unsampled)]) as neither:
        pass
    assert both.get_span_context().trace_flags.sampled
    assert not neither.get_span_context().trace_flags.sampled
    assert p.exported() == {"both"}


def test_description_and_root() -> None:
    sampler = LinkAwareSampler(TraceIdRatioBased(0.5))
    assert sampler.get_description() == "LinkAware{TraceIdRatioBased{0.5}}"
    assert LinkAwareSampler().root is DEFAULT_ON


@pytest.mark.parametrize(
    ("name", "arg", "description"),
    [
        ("always_on", None, "AlwaysOnSampler"),
        ("ALWAYS_OFF", None, "AlwaysOffSampler"),
        ("parentbased_always_on", None, "ParentBased{root:AlwaysOnSampler"),
        ("parentbased_always_off", None, "ParentBased{root:AlwaysOffSampler"),
        ("traceidratio", "0.1", "TraceIdRatioBased{0.1}"),
        ("traceidratio", None, "TraceIdRatioBased{1.0}"),
        ("parentbased_traceidratio", 0.5, "ParentBased{root:TraceIdRatioBased{0.5}"),
    ],
)
def test_sampler_names(name: str, arg: str | float | None, description: str) -> None:
    assert sampler_from_name(name, arg).get_description().startswith(description)


@pytest.mark.parametrize(
    ("name", "arg"),
    [("unknown", None), ("traceidratio", "-0.1"), ("traceidratio", "nan"), ("traceidratio", "x")],
)
def test_bad_sampler_names_and_ratios_raise(name: str, arg: str | None) -> None:
    with pytest.raises(ValueError, match="sampler"):
        sampler_from_name(name, arg)


def test_sampler_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    assert sampler_from_env() is DEFAULT_ON
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.3")
    assert sampler_from_env().get_description() == "TraceIdRatioBased{0.3}"
