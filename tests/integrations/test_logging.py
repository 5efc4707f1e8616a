"""The ids on log lines: loguru patcher, stdlib Filter (dictConfig) and structlog processor."""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from loguru import logger

from kilostar_otel import request_id_scope, trace_id_scope
from kilostar_otel.integrations.logging import (
    FIELDS,
    FORMAT,
    LOGURU_FORMAT,
    RequestIdFilter,
    install_loguru,
    log_fields,
    loguru_patcher,
    structlog_processor,
)
from tests.conftest import Swallowed

EMPTY = dict.fromkeys(FIELDS, "")


def test_log_fields_unbound_and_bound(tracer: Any) -> None:
    assert log_fields() == EMPTY
    with request_id_scope("req-l"), trace_id_scope("a" * 32):
        with tracer.start_as_current_span("s") as span:
            fields = log_fields()
    ctx = span.get_span_context()
    assert fields == {
        "request_id": "req-l",
        "trace_id": "a" * 32,
        "otel_trace_id": format(ctx.trace_id, "032x"),
        "otel_span_id": format(ctx.span_id, "016x"),
    }


# -- loguru -----------------------------------------------------------------------------------


@pytest.fixture
def loguru_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message).rstrip("\n")), format="{message}")
    yield lines
    logger.remove(sink)


def _sink(lines: list[str], fmt: str) -> int:
    return logger.add(lambda message: lines.append(str(message).rstrip("\n")), format=fmt)


def test_install_loguru_keeps_the_users_patcher_and_can_be_undone() -> None:
    def user_patcher(record: Any) -> None:
        record["extra"]["app"] = "shop"
        record["extra"]["seen_request_id"] = record["extra"].get("request_id", "missing")

    logger.configure(patcher=user_patcher)
    restore = install_loguru()
    again = install_loguru()  # idempotent
    lines: list[str] = []
    sink = _sink(lines, "{extra[app]} {extra[request_id]} {extra[seen_request_id]} {message}")
    try:
        with request_id_scope("req-lg"):
            logger.info("bound")
        logger.info("unbound")
    finally:
        logger.remove(sink)
        again()
        restore()
    assert lines == ["shop req-lg req-lg bound", "shop   unbound"]
    after: list[str] = []
    sink = _sink(after, "{extra} {message}")
    try:
        logger.info("restored")
    finally:
        logger.remove(sink)
        logger.configure(patcher=lambda record: None)
    # Ours is gone, the user's patcher is back on its own.
    assert after == ["{'app': 'shop', 'seen_request_id': 'missing'} restored"]


def test_loguru_format_never_breaks_and_explicit_bind_wins(tracer: Any) -> None:
    restore = install_loguru()
    lines: list[str] = []
    sink = _sink(lines, LOGURU_FORMAT)
    try:
        logger.info("nothing bound")
        with request_id_scope("req-ctx"), tracer.start_as_current_span("s") as span:
            logger.info("in span")
            logger.bind(request_id="req-explicit").info("explicit")
        logger.configure(extra={"request_id": ""})  # a user's defaults do not hide the context
        with request_id_scope("req-default"):
            logger.info("defaults")
    finally:
        logger.remove(sink)
        logger.configure(extra={})
        restore()
    assert "[request_id= trace_id= otel_trace_id= otel_span_id=] nothing bound" in lines[0]
    assert (
        f"request_id=req-ctx trace_id= otel_trace_id={span.get_span_context().trace_id:032x}"
        in (lines[1])
    )
    assert "request_id=req-explicit " in lines[2]
    assert "request_id=req-default " in lines[3]


def test_loguru_patcher_survives_a_broken_record(swallowed: Swallowed) -> None:
    loguru_patcher({})  # no "extra": nothing to do, nothing raised
    assert swallowed.count("loguru_patcher") == 1


# -- stdlib logging ---------------------------------------------------------------------------


@pytest.fixture
def dictconfig_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"ids": {"()": "kilostar_otel.integrations.logging.RequestIdFilter"}},
            "formatters": {"ids": {"format": FORMAT}},
            "handlers": {
                "mem": {
                    "class": "logging.StreamHandler",
                    "stream": stream,
                    "filters": ["ids"],
                    "formatter": "ids",
                }
            },
            "loggers": {"tests.dictconfig": {"handlers": ["mem"], "level": "INFO"}},
        }
    )
    log = logging.getLogger("tests.dictconfig")
    yield log, stream
    for handler in list(log.handlers):
        log.removeHandler(handler)


def test_stdlib_filter_from_dictconfig(
    dictconfig_logger: tuple[logging.Logger, io.StringIO], tracer: Any
) -> None:
    log, stream = dictconfig_logger
    log.info("unbound")
    with request_id_scope("req-std"), tracer.start_as_current_span("s") as span:
        logging.getLogger("tests.dictconfig.child").info("from a child logger")
        log.info("explicit", extra={"request_id": "req-extra"})
    lines = stream.getvalue().splitlines()
    assert "[request_id= trace_id= otel_trace_id= otel_span_id=] unbound" in lines[0]
    ctx = span.get_span_context()
    assert (
        f"[request_id=req-std trace_id= otel_trace_id={ctx.trace_id:032x} "
        f"otel_span_id={ctx.span_id:016x}] from a child logger"
    ) in lines[1]
    assert "request_id=req-extra " in lines[2]


def test_the_filter_never_drops_a_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert RequestIdFilter().filter(record) is True
    assert {k: getattr(record, k) for k in FIELDS} == EMPTY


# -- structlog --------------------------------------------------------------------------------


def test_structlog_processor() -> None:
    captured: list[dict[str, Any]] = []

    def capture(logger: Any, method_name: str, event_dict: dict[str, Any]) -> str:
        captured.append(dict(event_dict))
        return ""

    log = structlog.wrap_logger(
        structlog.PrintLogger(io.StringIO()), processors=[structlog_processor, capture]
    )
    log.info("unbound")
    with request_id_scope("req-sl"):
        log.info("bound")
        log.info("explicit", request_id="req-own")
    assert {k: captured[0][k] for k in FIELDS} == EMPTY
    assert captured[1]["request_id"] == "req-sl"
    assert captured[2]["request_id"] == "req-own"
