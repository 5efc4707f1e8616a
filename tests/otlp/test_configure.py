"""configure(): settings, validation, the private pipeline and the drop counter (in-process).

Everything here uses ``set_global=False``: the session's global provider stays untouched. The
global path (and calling configure() twice) is tested in subprocesses in test_global.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry import propagate, trace
from opentelemetry.context import attach, detach
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kilostar_otel import bind_request_id, reset_request_id, workflow
from kilostar_otel.configure import configure
from kilostar_otel.sampling import LinkAwareSampler
from kilostar_otel.viewer import OtlpReceiver

from ..conftest import Spans
from .conftest import clean_env


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without OTEL_* settings."""
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "udp"}, "protocol must be 'grpc' or 'http/protobuf'"),
        ({"protocol": "http/json"}, "OTLP/JSON is not supported"),
        ({"endpoint": ""}, "must be a URL"),
        ({"endpoint": "localhost:4317:99"}, "invalid port"),
        ({"endpoint": "http://localhost:99999"}, "invalid port"),
        ({"endpoint": "http://localhost:port"}, "invalid port"),
        ({"endpoint": "ftp://localhost:4317"}, "http:// or https://"),
        ({"endpoint": "http://:4317"}, "no host"),
        ({"endpoint": "http://user:pw@localhost:4317"}, "credentials"),
        ({"endpoint": "http://localhost:4317/v1/traces"}, "cannot have a path"),
        ({"endpoint": "http://localhost"}, "needs a port"),
        ({"endpoint": "http://local host:4317"}, "whitespace"),
        ({"endpoint": "http://localhost:4317\r\nX: y"}, "control characters"),
        ({"endpoint": "localhost:4318", "protocol": "http/protobuf"}, "must start with http"),
        ({"compression": "brotli"}, "compression must be"),
        ({"timeout": 0}, "timeout must be a positive"),
        ({"timeout": -1.5}, "timeout must be a positive"),
        ({"headers": {"bad header": "x"}}, "not a valid HTTP header name"),
        ({"headers": {"x-ok": "a\nb"}}, "without control chars"),
        ({"sampler": "sometimes"}, "unknown sampler"),
        ({"sampler": "traceidratio", "sampler_arg": 1.5}, r"must be in \[0, 1\]"),
        ({"sampler": "traceidratio", "sampler_arg": "half"}, "must be a number"),
        ({"exporter": "zipkin"}, "exporter must be a SpanExporter or one of"),
        ({"max_queue_size": 0}, "max_queue_size must be a positive integer"),
        ({"max_queue_size": 8, "max_export_batch_size": 16}, "must not exceed max_queue_size"),
        ({"schedule_delay_millis": -5}, "schedule_delay_millis must be a positive"),
        ({"service_name": ""}, "service_name must be a non-empty string"),
    ],
)
def test_invalid_arguments_raise_a_clear_value_error(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        configure(set_global=False, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, "OTEL_EXPORTER_OTLP_PROTOCOL must be"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTLP/JSON is not supported"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1"}, "invalid port|Invalid IPv6"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "gopher://x:1"}, "OTEL_EXPORTER_OTLP_TRACES_END"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "lz4"}, "OTEL_EXPORTER_OTLP_COMPRESSION must be"),
        ({"OTEL_TRACES_SAMPLER": "nope"}, "unknown sampler"),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            r"must be in \[0, 1\]",
        ),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE must be a positive"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "0"}, "OTEL_BSP_SCHEDULE_DELAY must be a positive"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16384"}, "must not exceed max_queue_size"),
        ({"OTEL_PROPAGATORS": "tracecontext,b3x"}, "unknown propagator 'b3x'"),
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER must be one of"),
    ],
)
def test_invalid_environment_raises_a_clear_value_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        configure(set_global=False)


def test_invalid_settings_leave_the_globals_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    before_provider, before_propagator = trace.get_tracer_provider(), propagate.get_global_textmap()
    with pytest.raises(ValueError, match="compression"):
        configure(service_name="x", compression="zstd")  # type: ignore[arg-type]
    assert trace.get_tracer_provider() is before_provider
    assert propagate.get_global_textmap() is before_propagator


# -- resolution -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "env", "protocol", "endpoint"),
    [
        ({}, {}, "grpc", "http://localhost:4317"),
        ({"protocol": "http/protobuf"}, {}, "http/protobuf", "http://localhost:4318/v1/traces"),
        ({"endpoint": "collector:4317", "insecure": True}, {}, "grpc", "http://collector:4317"),
        ({"endpoint": "collector:4317"}, {}, "grpc", "https://collector:4317"),
        (
            {"endpoint": "collector:4317"},
            {"OTEL_EXPORTER_OTLP_INSECURE": "true"},
            "grpc",
            "http://collector:4317",
        ),
        ({"endpoint": "https://c.example:443/"}, {}, "grpc", "https://c.example:443"),
        (
            {"endpoint": "http://c:4318", "protocol": "http/protobuf"},
            {},
            "http/protobuf",
            "http://c:4318/v1/traces",
        ),
        (
            {"endpoint": "http://c:4318/custom/traces", "protocol": "http/protobuf"},
            {},
            "http/protobuf",
            "http://c:4318/custom/traces",
        ),
        (
            {},
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/base/",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "http/protobuf",
            "http://c:4318/base/v1/traces",
        ),
        (
            {},
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://signal:4318/exact",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "http/protobuf",
            "http://signal:4318/exact",
        ),
        (
            {},
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            "grpc",
            "http://localhost:4317",
        ),
        # Arguments win over the environment.
        (
            {"protocol": "grpc", "endpoint": "http://arg:4317"},
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:1",
            },
            "grpc",
            "http://arg:4317",
        ),
    ],
)
def test_protocol_and_endpoint_resolution(
    monkeypatch: pytest.MonkeyPatch,
    kwargs: dict[str, object],
    env: dict[str, str],
    protocol: str,
    endpoint: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with configure(set_global=False, **kwargs) as telemetry:  # type: ignore[arg-type]
        assert (telemetry.protocol, telemetry.endpoint) == (protocol, endpoint)
        expected = GrpcSpanExporter if protocol == "grpc" else HttpSpanExporter
        assert isinstance(telemetry.exporter, expected)


def test_resource_from_arguments_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "env-svc")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,team=a")
    with configure(set_global=False, exporter="none") as from_env:
        attrs = from_env.tracer_provider.resource.attributes
        assert attrs["service.name"] == "env-svc"
        assert attrs["deployment.environment"] == "staging"
    with configure(
        "arg-svc", set_global=False, exporter="none", resource_attributes={"team": "b"}
    ) as from_args:
        attrs = from_args.tracer_provider.resource.attributes
        assert (attrs["service.name"], attrs["team"]) == ("arg-svc", "b")
        assert attrs["deployment.environment"] == "staging"
        assert attrs["telemetry.distro.name"] == "kilostar-otel"


def test_sampler_from_environment_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    with configure(set_global=False, exporter="none") as default:
        assert isinstance(default.sampler, LinkAwareSampler)
        assert default.sampler.get_description().startswith("LinkAware{ParentBased{root:AlwaysOn")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    with configure(set_global=False, exporter="none") as from_env:
        assert "TraceIdRatioBased{0.25}" in from_env.sampler.get_description()
    with configure(
        set_global=False, exporter="none", sampler="always_off", link_aware_sampling=False
    ) as from_args:
        assert from_args.sampler.get_description() == "AlwaysOffSampler"
        assert not from_args.get_tracer("t").start_span("s").is_recording()


def test_console_and_none_exporters() -> None:
    with configure(set_global=False, exporter="console") as console:
        assert isinstance(console.exporter, ConsoleSpanExporter)
    with configure(set_global=False, exporter="none") as none:
        assert none.exporter is None
        none.get_tracer("t").start_span("kept nowhere").end()
        assert none.force_flush()
        assert none.dropped_spans == 0


def test_disabled_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "TRUE")
    with configure(set_global=False) as telemetry:
        assert not telemetry.enabled
        assert telemetry.exporter is None
        assert not telemetry.get_tracer("t").start_span("s").is_recording()
    with configure(set_global=False, disabled=False, exporter="none") as forced_on:
        assert forced_on.enabled


def test_an_unrecognised_disabled_value_counts_as_false(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "yes please")
    with configure(set_global=False, exporter="none") as telemetry:
        assert telemetry.enabled
    assert "OTEL_SDK_DISABLED" in caplog.text


def test_importing_the_package_loads_no_exporter() -> None:
    code = (
        "import sys, kilostar_otel\n"
        "kilostar_otel.configure\n"
        "heavy = [m for m in sys.modules if m.startswith('grpc') or 'exporter' in m]\n"
        "assert not heavy, heavy\n"
        "kilostar_otel.configure(set_global=False, exporter='none').shutdown()\n"
        "heavy = [m for m in sys.modules if m.startswith('grpc') or 'exporter.otlp' in m]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


# -- the private pipeline, over the wire ----------------------------------------------------------


def test_private_pipeline_exports_and_leaves_the_globals_alone(
    receiver: OtlpReceiver, spans: Spans
) -> None:
    before_provider, before_propagator = trace.get_tracer_provider(), propagate.get_global_textmap()
    with configure(
        "private-svc", set_global=False, endpoint="http://" + receiver.grpc_endpoint
    ) as telemetry:
        assert trace.get_tracer_provider() is before_provider
        assert propagate.get_global_textmap() is before_propagator
        assert "x-request-id" in telemetry.propagator.fields
        assert not telemetry.is_global
        tracer = telemetry.get_tracer("private")
        ctx = telemetry.propagator.extract({"x-request-id": "req-private-1"})
        token = attach(ctx)
        try:
            with tracer.start_as_current_span("request"):
                with workflow("job", tracer_provider=telemetry.tracer_provider) as wf:
                    pass
        finally:
            detach(token)
        assert telemetry.force_flush(10_000)
    got = {s.name: s for s in receiver.wait_for_spans(2)}
    assert got["request"].attributes["kilostar.request_id"] == "req-private-1"
    assert got["invoke_workflow job"].trace_id == wf.trace_id
    assert got["invoke_workflow job"].resource["service.name"] == "private-svc"
    assert spans.all() == []  # nothing went through the session's global provider


# -- dropped spans --------------------------------------------------------------------------------


class GatedExporter(SpanExporter):
    """Collects spans in memory, but each export waits until the gate opens."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.gate.wait(30)
        return self.memory.export(spans)

    def shutdown(self) -> None:
        self.gate.set()


@pytest.mark.parametrize("via", ["arguments", "environment"])
def test_dropped_spans_are_counted(monkeypatch: pytest.MonkeyPatch, via: str) -> None:
    exporter = GatedExporter()
    batch = {"max_queue_size": 4, "max_export_batch_size": 1, "schedule_delay_millis": 60_000}
    if via == "environment":
        monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")
        monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
        batch = {}
    telemetry = configure(set_global=False, exporter=exporter, **batch)  # type: ignore[arg-type]
    tracer = telemetry.get_tracer("drops")
    tracer.start_span("s1").end()
    assert exporter.entered.wait(10)  # the worker holds s1 in a blocked export; the queue is empty
    for n in range(2, 8):
        tracer.start_span(f"s{n}").end()  # s2..s5 fill the queue of 4; two more do not fit
    assert telemetry.dropped_spans == 2
    exporter.gate.set()
    assert telemetry.force_flush(10_000)
    exported = [s.name for s in exporter.memory.get_finished_spans()]
    assert len(exported) == 5
    assert exported[0] == "s1"
    assert set(exported) == {"s1", "s4", "s5", "s6", "s7"}  # the oldest queued ones were dropped
    telemetry.shutdown()
    tracer.start_span("after shutdown").end()
    assert telemetry.dropped_spans == 3


def test_shutdown_is_idempotent_and_flushes(receiver: OtlpReceiver) -> None:
    telemetry = configure(
        set_global=False,
        endpoint=receiver.http_endpoint,
        protocol="http/protobuf",
        schedule_delay_millis=60_000,
    )
    token = bind_request_id("req-flush-1")
    try:
        telemetry.get_tracer("t").start_span("queued").end()
    finally:
        reset_request_id(token)
    telemetry.shutdown(5_000)
    telemetry.shutdown(5_000)
    [span] = receiver.wait_for_spans(1)
    assert span.attributes["kilostar.request_id"] == "req-flush-1"
    assert telemetry.force_flush() is False
    assert "otlp http/protobuf" in repr(telemetry)


def test_package_attribute_works_after_the_submodule_is_imported() -> None:
    # The package imports the function eagerly, so importing the submodule later cannot rebind it.
    code = (
        "import kilostar_otel\n"
        "from kilostar_otel.configure import Telemetry\n"
        "from kilostar_otel import configure\n"
        "for make in (configure, kilostar_otel.configure, kilostar_otel.configure):\n"
        "    handle = make(set_global=False, exporter='none')\n"
        "    assert isinstance(handle, Telemetry), handle\n"
        "    handle.shutdown()\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_force_flush_returns_within_its_timeout_while_the_back_end_hangs() -> None:
    exporter = GatedExporter()
    telemetry = configure(set_global=False, exporter=exporter, schedule_delay_millis=60_000)
    telemetry.get_tracer("hang").start_span("stuck").end()
    started = time.monotonic()
    assert telemetry.force_flush(300) is False
    assert telemetry.force_flush(300) is False  # joins the flush still running, starts no other
    assert time.monotonic() - started < 5  # the SDK alone would wait for the exporter (30 s)
    exporter.gate.set()
    assert telemetry.force_flush(10_000) is True
    assert [s.name for s in exporter.memory.get_finished_spans()] == ["stuck"]
    telemetry.shutdown()
