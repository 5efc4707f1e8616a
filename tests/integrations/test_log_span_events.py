"""Opt-in: log records as events on the current span (stdlib handler and loguru sink)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger as loguru_logger

from kilostar_otel.integrations.logging import (
    LOG_EVENT,
    LOG_EVENTS_DROPPED,
    MAX_EVENTS_PER_SPAN,
    SpanEventHandler,
    install_loguru_span_events,
)


@pytest.fixture
def app_logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("kilostar.test.events")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)


def log_events(span: Any) -> list[dict[str, Any]]:
    return [dict(e.attributes) for e in span.events if e.name == LOG_EVENT]


def test_each_record_in_a_span_becomes_an_event(
    tracer: Any, spans: Any, app_logger: logging.Logger
) -> None:
    app_logger.addHandler(SpanEventHandler())
    app_logger.info("outside any span")
    before = time.time_ns()
    with tracer.start_as_current_span("request") as span:
        app_logger.info("hello %s", "world")
        app_logger.warning("careful")
    after = time.time_ns()
    assert log_events(span) == [
        {"level": "INFO", "message": "hello world", "logger": "kilostar.test.events"},
        {"level": "WARNING", "message": "careful", "logger": "kilostar.test.events"},
    ]
    assert all(before <= e.timestamp <= after for e in span.events)
    assert LOG_EVENTS_DROPPED not in (span.attributes or {})


def test_the_handlers_level_filters(tracer: Any, spans: Any, app_logger: logging.Logger) -> None:
    app_logger.addHandler(SpanEventHandler(logging.WARNING))
    with tracer.start_as_current_span("request") as span:
        app_logger.info("not this")
        app_logger.error("this")
    assert [e["message"] for e in log_events(span)] == ["this"]


def test_a_cap_per_span_and_the_rest_counted(
    tracer: Any, spans: Any, app_logger: logging.Logger
) -> None:
    app_logger.addHandler(SpanEventHandler(max_events_per_span=3))
    with tracer.start_as_current_span("busy") as busy:
        for i in range(5):
            app_logger.info("line %d", i)
        with tracer.start_as_current_span("child") as child:
            app_logger.info("in the child")
    assert [e["message"] for e in log_events(busy)] == ["line 0", "line 1", "line 2"]
    assert busy.attributes[LOG_EVENTS_DROPPED] == 2
    assert [e["message"] for e in log_events(child)] == ["in the child"]
    assert LOG_EVENTS_DROPPED not in child.attributes
    assert MAX_EVENTS_PER_SPAN <= 128  # the SDK's own default limit of events per span


def test_long_messages_are_cut(tracer: Any, spans: Any, app_logger: logging.Logger) -> None:
    app_logger.addHandler(SpanEventHandler(max_message_length=20))
    with tracer.start_as_current_span("s") as span:
        app_logger.info("x" * 1000)
        app_logger.info("short")
    messages = [e["message"] for e in log_events(span)]
    assert messages == ["x" * 17 + "...", "short"]


def test_bad_records_never_raise_nor_print(
    tracer: Any, spans: Any, app_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = SpanEventHandler()
    bad = app_logger.makeRecord(
        app_logger.name, logging.INFO, __file__, 1, "%d apples", ("not a number",), None
    )
    odd = app_logger.makeRecord(app_logger.name, logging.INFO, __file__, 1, "ok", (), None)
    odd.created = "not a time"  # type: ignore[assignment]
    good = app_logger.makeRecord(app_logger.name, logging.INFO, __file__, 1, "fine", (), None)
    with tracer.start_as_current_span("s") as span:
        for record in (bad, odd, good):
            handler.handle(record)  # getMessage() raises for `bad`, int() for `odd`
    assert [e["message"] for e in log_events(span)] == ["fine"]
    assert capsys.readouterr().err == ""


def test_invalid_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        SpanEventHandler(max_events_per_span=-1)
    with pytest.raises(ValueError):
        SpanEventHandler(max_message_length=2)


def test_records_from_threads_go_to_their_own_spans(
    tracer: Any, spans: Any, app_logger: logging.Logger
) -> None:
    app_logger.addHandler(SpanEventHandler(max_events_per_span=50))
    done: dict[int, Any] = {}

    def work(n: int) -> None:
        with tracer.start_as_current_span(f"worker {n}") as span:
            for i in range(50):
                app_logger.info("worker %d line %d", n, i)
        done[n] = span

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, span in done.items():
        assert [e["message"] for e in log_events(span)] == [
            f"worker {n} line {i}" for i in range(50)
        ]


def test_loguru_sink_records_events_and_can_be_removed(tracer: Any, spans: Any) -> None:
    remove = install_loguru_span_events(level="INFO")
    try:
        with tracer.start_as_current_span("request") as span:
            loguru_logger.debug("below the level")
            loguru_logger.info("planning {}", 3)
            loguru_logger.error("failed")
    finally:
        remove()
    assert log_events(span) == [
        {"level": "INFO", "message": "planning 3", "logger": __name__},
        {"level": "ERROR", "message": "failed", "logger": __name__},
    ]
    with tracer.start_as_current_span("after") as after:
        loguru_logger.info("not recorded any more")
    assert log_events(after) == []
    remove()  # twice is harmless


def test_loguru_bounds(tracer: Any, spans: Any) -> None:
    remove = install_loguru_span_events(max_events_per_span=2, max_message_length=10)
    try:
        with tracer.start_as_current_span("request") as span:
            for i in range(4):
                loguru_logger.info("message number {}", i)
    finally:
        remove()
    assert [e["message"] for e in log_events(span)] == ["message...", "message..."]
    assert span.attributes[LOG_EVENTS_DROPPED] == 2
