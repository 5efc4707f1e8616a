"""configure() on the global provider and the zero-code path, each in a fresh interpreter."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from kilostar_otel.viewer import OtlpReceiver

from .conftest import clean_env, run_script

INSTRUMENT = shutil.which("opentelemetry-instrument") or str(
    Path(sys.executable).parent / "opentelemetry-instrument"
)


def test_calling_configure_again_never_adds_processors(receiver: OtlpReceiver) -> None:
    report = run_script(
        "global_app.py",
        "twice",
        "http://" + receiver.grpc_endpoint,
        receiver.http_endpoint,
        env=clean_env(),
    )
    assert report["same_handle"] is True
    assert report["provider_is_global"] is True
    assert report["processors"] == ["KiloStarSpanProcessor", "_ExportPipeline"]
    # The new sampler applies to tracers obtained before the second call.
    assert report["sampler"] == "LinkAware{AlwaysOnSampler}"
    assert report["endpoint"] == receiver.http_endpoint + "/v1/traces"
    assert "cannot change" in report["rename_error"]
    # Without strict=True a conflicting call never stops a service: a warning, the first resource.
    assert report["lenient_same_handle"] is True
    assert report["service_name"] == "twice-svc"
    assert [w for w in report["lenient_warnings"] if "cannot change" in w and "kept it" in w]
    assert "x-request-id" in report["propagator_fields"]
    assert report["dropped"] == 0
    spans = {s.name: s for s in receiver.wait_for_spans(2)}
    assert "dropped by always_off" not in spans
    assert spans["one"].transport == "grpc"  # before the endpoint moved
    assert spans["two"].transport == "http"  # after it moved
    assert {s.attributes["kilostar.request_id"] for s in spans.values()} == {"req-twice-1"}
    assert {s.resource["service.name"] for s in spans.values()} == {"twice-svc"}


@pytest.mark.parametrize(
    ("otel_propagators", "fields"),
    [
        (None, ["baggage", "traceparent", "tracestate", "x-request-id"]),
        ("tracecontext", ["traceparent", "tracestate"]),
        ("tracecontext,kilostar", ["baggage", "traceparent", "tracestate", "x-request-id"]),
        ("none", []),
    ],
)
def test_otel_propagators_decides_the_global_propagator(
    otel_propagators: str | None, fields: list[str]
) -> None:
    env = clean_env() if otel_propagators is None else clean_env(OTEL_PROPAGATORS=otel_propagators)
    report = run_script("global_app.py", "propagators", env=env)
    assert report["propagator_fields"] == fields
    assert report["handle_fields"] == fields


def test_a_provider_installed_before_is_adopted_not_duplicated() -> None:
    report = run_script("global_app.py", "adopt", env=clean_env())
    assert report["processors"] == ["KiloStarSpanProcessor", "SimpleSpanProcessor"]
    assert report["handle_provider_is_global"] is True
    assert report["again_provider_is_global"] is True
    assert report["exporter"] == "None"
    assert report["attributes"] == {"kilostar.request_id": "req-adopt-1"}


# -- zero code ------------------------------------------------------------------------------------


def _zero_code_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    settings = {
        "OTEL_SERVICE_NAME": "zero-code-svc",
        "OTEL_PROPAGATORS": "tracecontext,baggage,kilostar",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    merged = {**settings, **extra}
    return clean_env(**{k: v for k, v in merged.items() if v})


@pytest.mark.parametrize(
    ("configurator", "sampler"),
    [
        # Ours: the processor and the link-aware sampler, built in by the configurator.
        ("kilostar", "LinkAwareSampler"),
        # opentelemetry-distro's: the processor still arrives (post-instrument hook), once.
        ("configurator", "ParentBased"),
    ],
)
def test_zero_code_installs_the_span_processor(
    receiver: OtlpReceiver, configurator: str, sampler: str
) -> None:
    env = _zero_code_env(receiver, OTEL_PYTHON_CONFIGURATOR=configurator)
    report = run_script("zero_code_app.py", env=env, prefix=(INSTRUMENT,))
    assert report["kilostar_processors"] == 1
    assert report["sampler"] == sampler
    assert report["request_id"] == "req-zero-code-1"
    assert "x-request-id" in report["propagator_fields"]
    spans = {s.name: s for s in receiver.wait_for_spans(3)}
    root = spans["invoke_workflow plan"]
    assert root.trace_id == report["workflow_trace_id"]
    assert root.parent_span_id == ""
    assert (root.trace_id, root.span_id) in spans["GET /plan"].links
    for span in spans.values():
        assert span.attributes["kilostar.request_id"] == "req-zero-code-1"
        assert span.resource["service.name"] == "zero-code-svc"
        assert "tenant" not in span.attributes
    assert spans["step"].attributes["kilostar.trace_id"] == root.trace_id


def test_zero_code_with_our_distro_needs_only_the_propagators(receiver: OtlpReceiver) -> None:
    # The distro defaults the exporter to OTLP and picks our configurator once opted in.
    env = _zero_code_env(receiver, OTEL_PYTHON_DISTRO="kilostar", OTEL_TRACES_EXPORTER="")
    report = run_script("zero_code_app.py", env=env, prefix=(INSTRUMENT,))
    assert report["kilostar_processors"] == 1
    assert report["sampler"] == "LinkAwareSampler"
    spans = receiver.wait_for_spans(3)
    assert {s.attributes["kilostar.request_id"] for s in spans} == {"req-zero-code-1"}


def test_zero_code_whichever_configurator_loads_first(receiver: OtlpReceiver) -> None:
    report = run_script("zero_code_app.py", env=_zero_code_env(receiver), prefix=(INSTRUMENT,))
    assert report["kilostar_processors"] == 1
    assert report["sampler"] in {"LinkAwareSampler", "ParentBased"}
    spans = receiver.wait_for_spans(3)
    assert {s.attributes["kilostar.request_id"] for s in spans} == {"req-zero-code-1"}


def test_zero_code_without_the_opt_in_changes_nothing(receiver: OtlpReceiver) -> None:
    env = _zero_code_env(receiver, OTEL_PROPAGATORS="tracecontext,baggage")
    report = run_script("zero_code_app.py", env=env, prefix=(INSTRUMENT,))
    assert report["kilostar_processors"] == 0
    assert report["sampler"] == "ParentBased"
    spans = receiver.wait_for_spans(3)
    assert all("kilostar.request_id" not in s.attributes for s in spans)
