"""``workflow()``: each heavy workflow is its own OpenTelemetry trace, linked to its request.

The workflow root span has no parent, its trace id *is* the workflow ``trace_id`` (32 lowercase
hex), and Links join it to the request span both ways, so either side opens the other in Jaeger.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from contextvars import Token
from types import TracebackType
from typing import Any, Final, TypeVar, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from kilostar_otel import _internals
from kilostar_otel._calls import detach, wrap
from kilostar_otel._guard import internal_error
from kilostar_otel._idcontext import TRACE_ID_KEY, current_request_id
from kilostar_otel._internals import SPAN_KEY, stamp_attribute
from kilostar_otel._names import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_WORKFLOW_NAME,
    INSTRUMENTATION_NAME,
    INVOKE_WORKFLOW,
    REQUEST_ID_ATTRIBUTE,
    TRACE_ID_ATTRIBUTE,
    WORKFLOW_NAME_ATTRIBUTE,
    WORKFLOW_STARTED_EVENT,
)
from kilostar_otel._version import __version__
from kilostar_otel.ids import new_trace_id

__all__ = [
    "WORKFLOW_NAME_ATTRIBUTE",
    "WORKFLOW_STARTED_EVENT",
    "Workflow",
    "workflow",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_tracer: Tracer | None = None
# One tracer per explicit provider: the SDK's get_tracer() builds a new tracer (and scope) per call.
_tracers: weakref.WeakKeyDictionary[TracerProvider, Tracer] = weakref.WeakKeyDictionary()


def _global_tracer() -> Tracer:
    global _tracer
    if _tracer is None:
        # A ProxyTracer until an SDK provider is installed; it follows the provider afterwards.
        _tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__)
    return _tracer


def _tracer_of(provider: TracerProvider) -> Tracer:
    try:
        tracer = _tracers.get(provider)
    except TypeError:  # a provider that cannot be weakly referenced: no cache
        return provider.get_tracer(INSTRUMENTATION_NAME, __version__)
    if tracer is None:
        tracer = provider.get_tracer(INSTRUMENTATION_NAME, __version__)
        try:
            _tracers[provider] = tracer
        except TypeError:  # pragma: no cover - get() would have raised already
            pass
    return tracer


#: The longest status description a workflow root gets (the text comes from an exception).
_STATUS_DESCRIPTION_MAX: Final = 1024


def _describe(exc: BaseException) -> str:
    """``"Type: message"`` for a status description: never raises, valid UTF-8, bounded.

    The message may hold client input (a lone surrogate such as ``"\\ud800"`` cannot be
    encoded and would make the back end reject the whole batch), or ``__str__`` may raise.
    """
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:
        text = f"{type(exc).__name__}: <str() failed>"
    text = text[:_STATUS_DESCRIPTION_MAX]
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_log = logging.getLogger("kilostar_otel")
_warned_no_sdk: list[bool] = []


def _warn_no_sdk(name: str) -> None:
    """Say once per process that workflows are recorded nowhere without an SDK provider."""
    if not _warned_no_sdk:
        _warned_no_sdk.append(True)
        _log.warning(
            "kilostar_otel: workflow(%r) started with no OpenTelemetry SDK TracerProvider "
            "configured, so its trace is recorded nowhere (its trace_id is a fresh random id). "
            "Call kilostar_otel.configure() at start-up, or set an SDK TracerProvider. "
            "Logged once per process.",
            name,
        )


class _Run:
    """One execution of a workflow: its root span and the context that makes it current."""

    __slots__ = ("context", "span", "trace_id")

    def __init__(
        self, name: str, attributes: Mapping[str, AttributeValue] | None, tracer: Tracer
    ) -> None:
        parent = _internals.current_context()
        request_span = parent.get(SPAN_KEY)
        if not isinstance(request_span, Span):
            request_span = trace.INVALID_SPAN
        request_context = request_span.get_span_context()
        root_attributes: dict[str, AttributeValue] = {
            WORKFLOW_NAME_ATTRIBUTE: name,
            GEN_AI_OPERATION_NAME: INVOKE_WORKFLOW,
            GEN_AI_WORKFLOW_NAME: name,
        }
        if attributes:
            root_attributes.update(attributes)
        request_id = current_request_id()
        if request_id:
            root_attributes[REQUEST_ID_ATTRIBUTE] = request_id
        # Same baggage and request id, but no current span (the root starts a new trace) and no
        # enclosing workflow's trace id; one copy of the context instead of a copy and two pops.
        span = tracer.start_span(
            f"{INVOKE_WORKFLOW} {name}",
            context=Context({**parent, SPAN_KEY: trace.INVALID_SPAN, TRACE_ID_KEY: ""}),
            kind=SpanKind.INTERNAL,
            attributes=root_attributes,
            links=(Link(request_context),) if request_context.is_valid else (),
        )
        span_context = span.get_span_context()
        # With no SDK installed the root is a no-op span with trace id 0: ids still work.
        if span_context.is_valid:
            trace_id = format(span_context.trace_id, "032x")
        else:
            trace_id = new_trace_id()
            _warn_no_sdk(name)
        stamp_attribute(span, TRACE_ID_ATTRIBUTE, trace_id)
        if span_context.is_valid and request_span.is_recording():
            request_span.add_link(span_context)
            request_span.add_event(WORKFLOW_STARTED_EVENT, {TRACE_ID_ATTRIBUTE: trace_id})
        self.span: Span = span
        self.trace_id = trace_id
        self.context = Context({**parent, SPAN_KEY: span, TRACE_ID_KEY: trace_id})

    def finish(self, exc: BaseException | None) -> None:
        span = self.span
        try:
            if exc is not None and not isinstance(exc, GeneratorExit) and span.is_recording():
                span.set_status(Status(StatusCode.ERROR, _describe(exc)))
                try:
                    span.record_exception(exc)
                except Exception as error:  # the exception's own __str__ or __repr__ raised
                    internal_error("workflow.finish", error)
        finally:
            span.end()  # on every path, whatever the exception does

    async def finish_async(self, exc: BaseException | None) -> None:
        self.finish(exc)


class Workflow:
    """A workflow root: a sync/async context manager and a decorator (see :func:`workflow`).

    As a context manager one object may be entered again after it exits, but not while it is
    active; as a decorator every call is its own workflow run.
    """

    __slots__ = ("_attributes", "_name", "_run", "_token", "_trace_id", "_tracer_provider")

    def __init__(
        self,
        name: str | None = None,
        *,
        attributes: Mapping[str, AttributeValue] | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._name = name
        self._attributes = dict(attributes) if attributes else None
        self._tracer_provider = tracer_provider
        self._run: _Run | None = None
        self._token: Token[Context] | None = None
        self._trace_id = ""

    @property
    def name(self) -> str:
        """The workflow's name (``kilostar.workflow.name``)."""
        return self._name or "workflow"

    @property
    def trace_id(self) -> str:
        """The ``trace_id`` of the current or last ``with`` run (``""`` before the first)."""
        return self._trace_id

    @property
    def span(self) -> Span:
        """The active run's root span (``INVALID_SPAN`` outside the ``with`` block)."""
        return self._run.span if self._run is not None else trace.INVALID_SPAN

    def _start(self, name: str | None = None) -> _Run:
        provider = self._tracer_provider
        tracer = _global_tracer() if provider is None else _tracer_of(provider)
        return _Run(name or self.name, self._attributes, tracer)

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> Workflow:
        if self._run is not None:
            raise RuntimeError(f"workflow {self.name!r} is already active; call workflow() again")
        run = self._start()
        self._token = _internals.attach_context(run.context)
        self._run = run
        self._trace_id = run.trace_id
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run, token = self._run, self._token
        self._run = self._token = None
        if run is None or token is None:
            return
        detach(token)  # first, as in every wrapped call (see kilostar_otel._calls)
        run.finish(exc)

    async def __aenter__(self) -> Workflow:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator ----------------------------------------------------------------------------

    def __call__(self, fn: _F) -> _F:
        name = self._name or getattr(fn, "__qualname__", None) or "workflow"

        def start(kwargs: dict[str, Any]) -> _Run:
            return self._start(name)

        return cast(_F, wrap(fn, start))


def workflow(
    name: str | None = None,
    *,
    attributes: Mapping[str, AttributeValue] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Workflow:
    """Start a workflow: a new trace whose id becomes ``trace_id``, linked to the current request.

    Use as ``with workflow("plan") as wf:``, ``async with workflow("plan"):``, or as a decorator on
    sync, async, generator and async-generator functions (``@workflow("plan")``; the name defaults
    to the function's qualified name). Inside, ``get_trace_id() == wf.trace_id``; the request's ids
    and baggage stay bound. An exception is recorded on the root span (status ERROR) and re-raised.
    """
    return Workflow(name, attributes=attributes, tracer_provider=tracer_provider)
