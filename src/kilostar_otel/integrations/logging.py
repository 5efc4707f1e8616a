"""The ids on every log line: loguru patcher, stdlib ``logging`` filter, structlog processor.

Each adds ``request_id``, ``trace_id`` (the workflow id), ``otel_trace_id`` and ``otel_span_id``
(the current span, hex). Unbound values are empty strings, never missing keys, so format strings
never break. A value already on the record (``extra=``, ``logger.bind(...)``) is kept unless empty.

Opt-in: :class:`SpanEventHandler` (stdlib) and :func:`install_loguru_span_events` (loguru) also
record each log line as an event on the current span (Jaeger shows them as the span's Logs).
"""

from __future__ import annotations

import itertools
import logging
import weakref
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Final

from opentelemetry import trace

from kilostar_otel._guard import internal_error
from kilostar_otel._idcontext import current_request_id, current_trace_id
from kilostar_otel._internals import current_context
from kilostar_otel._internals import loguru_patcher as configured_patcher
from kilostar_otel._names import LOG_EVENTS_DROPPED_ATTRIBUTE

__all__ = [
    "FIELDS",
    "FORMAT",
    "LOGURU_FORMAT",
    "LOG_EVENT",
    "LOG_EVENTS_DROPPED",
    "MAX_EVENTS_PER_SPAN",
    "MAX_MESSAGE_LENGTH",
    "RequestIdFilter",
    "SpanEventHandler",
    "install_loguru",
    "install_loguru_span_events",
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
        "request_id": current_request_id(),
        "trace_id": current_trace_id(),
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


# -- log records as span events (opt-in) -------------------------------------------------------

#: The name of the span event each log record becomes (attributes ``level``, ``message``,
#: ``logger``); Jaeger shows it in the span's Logs section as ``event=log``.
LOG_EVENT: Final = "log"
#: The span attribute counting the log records not recorded because the span reached its cap.
LOG_EVENTS_DROPPED: Final = LOG_EVENTS_DROPPED_ATTRIBUTE
#: Default cap of log events per span (the SDK keeps at most 128 events of any kind).
MAX_EVENTS_PER_SPAN: Final = 64
#: Default length a message is cut to (the cut one ends with "...").
MAX_MESSAGE_LENGTH: Final = 1024


class _SpanEventRecorder:
    """Adds log records to the current recording span, at most ``max_events`` per span."""

    def __init__(self, max_events: int, max_length: int) -> None:
        if max_events < 0 or max_length < 4:
            raise ValueError("max_events_per_span must be >= 0 and max_message_length >= 4")
        self.max_events = max_events
        self.max_length = max_length
        # One counter per live span. dict.setdefault and next() on an itertools.count are atomic
        # in CPython, so threads that log on one span share one count without a lock.
        self._counts: weakref.WeakKeyDictionary[Any, Iterator[int]] = weakref.WeakKeyDictionary()

    def record(self, level: str, message: str, logger: str, timestamp_ns: int | None) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        counter = self._counts.get(span)
        if counter is None:
            counter = self._counts.setdefault(span, itertools.count(1))
        count = next(counter)
        if count > self.max_events:
            span.set_attribute(LOG_EVENTS_DROPPED, count - self.max_events)
            return
        if len(message) > self.max_length:
            message = message[: self.max_length - 3] + "..."
        span.add_event(
            LOG_EVENT,
            {"level": level, "message": message, "logger": logger},
            timestamp=timestamp_ns,
        )


class SpanEventHandler(logging.Handler):
    """A stdlib handler that records each log record as an event on the current span.

    Opt-in: ``logging.getLogger().addHandler(SpanEventHandler())``. The event is :data:`LOG_EVENT`
    with ``level``, ``message`` (cut to ``max_message_length``) and ``logger``, at the record's
    time; a span gets at most ``max_events_per_span`` of them (the rest are counted in the span
    attribute :data:`LOG_EVENTS_DROPPED`). Records outside a recording span are ignored. It never
    raises into the code that logs.
    """

    def __init__(
        self,
        level: int | str = logging.NOTSET,
        *,
        max_events_per_span: int = MAX_EVENTS_PER_SPAN,
        max_message_length: int = MAX_MESSAGE_LENGTH,
    ) -> None:
        super().__init__(level)
        self._recorder = _SpanEventRecorder(max_events_per_span, max_message_length)

    def emit(self, record: logging.LogRecord) -> None:
        """Record ``record`` on the current span; errors are swallowed."""
        try:
            self._recorder.record(
                record.levelname, record.getMessage(), record.name, int(record.created * 1e9)
            )
        except Exception:
            return

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (stdlib name)
        """Never print or raise: a failed span event must not disturb the application."""


def install_loguru_span_events(
    logger: Any = None,
    *,
    level: str | int = "DEBUG",
    max_events_per_span: int = MAX_EVENTS_PER_SPAN,
    max_message_length: int = MAX_MESSAGE_LENGTH,
) -> Callable[[], None]:
    """Opt-in for loguru: a sink that records each record at ``level`` or above as a span event.

    The same event and bounds as :class:`SpanEventHandler`; ``logger`` is the record's module name
    (loguru's ``record["name"]``). The sink runs in the thread that logs, so the current span is
    the caller's. Returns a function that removes the sink.
    """
    if logger is None:
        from loguru import logger

    recorder = _SpanEventRecorder(max_events_per_span, max_message_length)

    def sink(message: Any) -> None:
        try:
            record = message.record
            recorder.record(
                record["level"].name,
                str(record["message"]),
                str(record["name"]),
                int(record["time"].timestamp() * 1e9),
            )
        except Exception:
            return

    sink_id = logger.add(sink, level=level, format="{message}", catch=True, enqueue=False)

    def remove() -> None:
        try:
            logger.remove(sink_id)
        except ValueError:
            pass  # already removed

    return remove
