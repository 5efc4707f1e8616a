"""The ids on every log line: loguru patcher, stdlib ``logging`` filter, structlog processor.

Each adds ``request_id``, ``trace_id`` (the workflow id), ``otel_trace_id`` and ``otel_span_id``
(the current span, hex). Unbound values are empty strings, never missing keys, so format strings
never break. A value already on the record (``extra=``, ``logger.bind(...)``) is kept unless empty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any, Final

from opentelemetry import trace

from kilostar_otel._guard import internal_error
from kilostar_otel._idcontext import request_id_from, trace_id_from
from kilostar_otel._internals import current_context
from kilostar_otel._internals import loguru_patcher as configured_patcher

__all__ = [
    "FIELDS",
    "FORMAT",
    "LOGURU_FORMAT",
    "RequestIdFilter",
    "install_loguru",
    "log_fields",
    "loguru_patcher",
    "structlog_processor",
]

#: The keys every integration adds.
FIELDS: Final = ("request_id", "trace_id", "otel_trace_id", "otel_span_id")

#: A stdlib format string using them (with :class:`RequestIdFilter` on the handler).
FORMAT: Final = (
    "%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s trace_id=%(trace_id)s "
    "otel_trace_id=%(otel_trace_id)s otel_span_id=%(otel_span_id)s] %(message)s"
)

#: The same line for loguru (``logger.add(sink, format=LOGURU_FORMAT)``).
LOGURU_FORMAT: Final = (
    "{time:YYYY-MM-DD HH:mm:ss.SSS} {level} {name} [request_id={extra[request_id]} "
    "trace_id={extra[trace_id]} otel_trace_id={extra[otel_trace_id]} "
    "otel_span_id={extra[otel_span_id]}] {message}"
)


def log_fields() -> dict[str, str]:
    """The four fields for the current context (``""`` for each one that is unbound)."""
    ctx = current_context()
    span_context = trace.get_current_span(ctx).get_span_context()
    if span_context.is_valid:
        otel_trace_id = format(span_context.trace_id, "032x")
        otel_span_id = format(span_context.span_id, "016x")
    else:
        otel_trace_id = otel_span_id = ""
    return {
        "request_id": request_id_from(ctx),
        "trace_id": trace_id_from(ctx),
        "otel_trace_id": otel_trace_id,
        "otel_span_id": otel_span_id,
    }


def _fill(target: MutableMapping[str, Any]) -> None:
    for key, value in log_fields().items():
        if not target.get(key):
            target[key] = value


# -- loguru -----------------------------------------------------------------------------------


def loguru_patcher(record: Any) -> None:
    """Loguru patcher: fills ``record["extra"]`` (``logger.configure(patcher=loguru_patcher)``)."""
    try:
        _fill(record["extra"])
    except Exception as exc:
        internal_error("loguru_patcher", exc)


def install_loguru(logger: Any = None) -> Callable[[], None]:
    """Install :func:`loguru_patcher` on loguru's logger, keeping the patcher already configured.

    One line: ``install_loguru()``. The user's patcher still runs, after ours (so it may read or
    override the ids). Installing twice is a no-op. Returns a function that restores the previous
    patcher.
    """
    if logger is None:
        from loguru import logger

    previous = configured_patcher(logger)
    if getattr(previous, "_kilostar_patcher", False) or previous is loguru_patcher:
        return lambda: None
    if previous is None:
        patcher: Callable[[Any], None] = loguru_patcher
    else:
        user_patcher = previous

        def patcher(record: Any) -> None:
            loguru_patcher(record)
            user_patcher(record)

        patcher._kilostar_patcher = True  # type: ignore[attr-defined]
    logger.configure(patcher=patcher)

    def restore() -> None:
        logger.configure(patcher=previous if previous is not None else _no_patcher)

    return restore


def _no_patcher(record: Any) -> None:
    """Stands in for "no patcher" (loguru's ``configure(patcher=None)`` keeps the current one)."""


# -- stdlib logging ---------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Sets ``request_id``, ``trace_id``, ``otel_trace_id``, ``otel_span_id`` on every record.

    Attach it to *handlers* (a logger's own filters do not see records from child loggers). From
    ``dictConfig``: ``{"filters": {"ids": {"()": "kilostar_otel.integrations.logging.
    RequestIdFilter"}}}`` and ``"filters": ["ids"]`` on the handler; then use :data:`FORMAT`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the fields; never drops a record."""
        try:
            for key, value in log_fields().items():
                if not getattr(record, key, None):
                    setattr(record, key, value)
        except Exception as exc:
            internal_error("RequestIdFilter.filter", exc)
            for key in FIELDS:
                if not hasattr(record, key):
                    setattr(record, key, "")
        return True


# -- structlog --------------------------------------------------------------------------------


def structlog_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor adding the four fields (put it before the renderer)."""
    try:
        _fill(event_dict)
    except Exception as exc:
        internal_error("structlog_processor", exc)
        for key in FIELDS:
            event_dict.setdefault(key, "")
    return event_dict
