"""Log lines in Jaeger: with the opt-in, a request's and a workflow's log records are the span's
Logs in Jaeger (event ``log`` with level, message and logger), from stdlib logging and loguru."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from loguru import logger as loguru_logger
from opentelemetry.trace import SpanKind

import kilostar_otel
from kilostar_otel import request_id_scope, workflow
from kilostar_otel.integrations.logging import SpanEventHandler, install_loguru_span_events

from .conftest import Jaeger, tags_of


@pytest.fixture
def app_logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("kilostar.test.jaeger")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = SpanEventHandler(max_events_per_span=3, max_message_length=40)
    log.addHandler(handler)
    yield log
    log.removeHandler(handler)


def test_log_lines_are_the_spans_logs_in_jaeger(jaeger: Jaeger, app_logger: logging.Logger) -> None:
    service = "kilostar-log-events"
    telemetry = kilostar_otel.configure(
        service_name=service, endpoint=f"http://{jaeger.otlp_grpc}", set_global=False
    )
    tracer = telemetry.get_tracer("test-log-events")
    remove = install_loguru_span_events(level="WARNING")
    try:
        with (
            request_id_scope(f"req-logs-{uuid.uuid4().hex[:12]}"),
            tracer.start_as_current_span("POST /plan", kind=SpanKind.SERVER) as request,
        ):
            app_logger.info("request accepted for %s", "plan")
            with workflow("plan", tracer_provider=telemetry.tracer_provider) as wf:
                app_logger.info("planning %d steps", 3)
                loguru_logger.warning("step {} is slow", 2)
                for i in range(5):
                    app_logger.info("step %d: %s", i, "x" * 100)
        assert telemetry.force_flush(10_000)
    finally:
        remove()
        telemetry.shutdown()

    request_trace = jaeger.wait_trace(format(request.get_span_context().trace_id, "032x"))
    request_span = request_trace.one("POST /plan")
    logs = [tags_of(log) for log in request_span["logs"]]
    assert {
        "event": "log",
        "level": "INFO",
        "message": "request accepted for plan",
        "logger": "kilostar.test.jaeger",
    } in logs
    assert any(log.get("event") == "kilostar.workflow.started" for log in logs)

    root = jaeger.wait_trace(wf.trace_id).one("invoke_workflow plan")
    lines = [tags_of(log) for log in root["logs"] if tags_of(log).get("event") == "log"]
    # The stdlib handler's cap is 3 on this span; loguru's sink counts its own.
    assert lines == [
        {
            "event": "log",
            "level": "INFO",
            "message": "planning 3 steps",
            "logger": "kilostar.test.jaeger",
        },
        {"event": "log", "level": "WARNING", "message": "step 2 is slow", "logger": __name__},
        {
            "event": "log",
            "level": "INFO",
            "message": "step 0: " + "x" * 29 + "...",
            "logger": "kilostar.test.jaeger",
        },
        {
            "event": "log",
            "level": "INFO",
            "message": "step 1: " + "x" * 29 + "...",
            "logger": "kilostar.test.jaeger",
        },
    ]
    assert tags_of(root)["kilostar.log.dropped_events"] == 3
