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
from kilostar_otel._internals import SPAN_KEY, add_link, add_string_event, stamp_attribute
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
# One tracer per provider: the SDK's get_tracer() builds a new tracer (and scope) per call.
_tracers: weakref.WeakKeyDictionary[TracerProvider, Tracer] = weakref.WeakKeyDictionary()
# The provider of the last lookup (weakly) and its tracer: nearly every call finds its tracer
# here. It keeps that one tracer alive until a workflow uses another provider.
_last: tuple[Callable[[], TracerProvider | None], Tracer] = (lambda: None, trace.NoOpTracer())


def _tracer_of(provider: TracerProvider) -> Tracer:
    global _last
    last_provider, last_tracer = _last  # one read: another thread may replace it
    if last_provider() is provider:
        return last_tracer
    try:
        tracer = _tracers.get(provider)
    except TypeError:  # a provider that cannot be weakly referenced: no cache
        return provider.get_tracer(INSTRUMENTATION_NAME, __version__)
    if tracer is None:
        tracer = _tracers[provider] = provider.get_tracer(INSTRUMENTATION_NAME, __version__)
    _last = (weakref.ref(provider), tracer)
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


def _root_start_context(parent: Context) -> Context:
    """The context a workflow root starts in: ``parent`` without its current span (the root
    starts a new trace) or an enclosing workflow's trace id; the same baggage and request id.

    Without a key, not with an invalid value: the SDK and its sampler then skip the checks of
    what the key holds.
    """
    if SPAN_KEY not in parent and TRACE_ID_KEY not in parent:
        return parent
    values = dict(parent)
    values.pop(SPAN_KEY, None)
    values.pop(TRACE_ID_KEY, None)
    return Context(values)


def _start_root(
    name: str, attributes: Mapping[str, AttributeValue] | None, tracer: Tracer
) -> tuple[Span, str, Context]:
    """Start a workflow root in the current context: ``(root span, trace_id, its context)``.

    The root starts a new trace, linked both ways to the current span (the request's) when that
    one is valid; the context to attach keeps the baggage and request id and binds the root and
    its ``trace_id``.
    """
    parent = _internals.current_context()
    request_span = parent.get(SPAN_KEY)
    if request_span is None or not isinstance(request_span, Span):
        request_span = trace.INVALID_SPAN
    request_context = request_span.get_span_context()
    root_attributes: dict[str, AttributeValue] = {
        WORKFLOW_NAME_ATTRIBUTE: name,
        GEN_AI_OPERATION_NAME: INVOKE_WORKFLOW,
        GEN_AI_WORKFLOW_NAME: name,
    }
    if attributes:
        root_attributes.update(attributes)
    request_id = current_request_id(parent)
    if request_id:
        root_attributes[REQUEST_ID_ATTRIBUTE] = request_id
    span = tracer.start_span(
        f"{INVOKE_WORKFLOW} {name}",
        context=_root_start_context(parent),
        kind=SpanKind.INTERNAL,
        attributes=root_attributes,
        links=(Link(request_context),) if request_context.is_valid else (),
    )
    span_context = span.get_span_context()
    # With no SDK installed the root is a no-op span with trace id 0: ids still work.
    if span_context.is_valid:
        trace_id = "%032x" % span_context.trace_id  # noqa: UP031 - the fastest of the three
        stamp_attribute(span, TRACE_ID_ATTRIBUTE, trace_id)
        if request_span.is_recording():
            add_link(request_span, span_context)
            add_string_event(request_span, WORKFLOW_STARTED_EVENT, TRACE_ID_ATTRIBUTE, trace_id)
    else:
        trace_id = new_trace_id()
        _warn_no_sdk(name)
        stamp_attribute(span, TRACE_ID_ATTRIBUTE, trace_id)
    return span, trace_id, Context({**parent, SPAN_KEY: span, TRACE_ID_KEY: trace_id})


def _end_root(span: Span, exc: BaseException | None) -> None:
    """End a workflow root; ``exc`` (but not ``GeneratorExit``) is recorded on it first."""
    try:
        if exc is not None and not isinstance(exc, GeneratorExit) and span.is_recording():
            span.set_status(Status(StatusCode.ERROR, _describe(exc)))
            try:
                span.record_exception(exc)
            except Exception as error:  # the exception's own __str__ or __repr__ raised
                internal_error("workflow.finish", error)
    finally:
        span.end()  # on every path, whatever the exception does


class _Run:
    """One call of a decorated workflow: the :class:`kilostar_otel._calls.Run` of its root."""

    __slots__ = ("context", "span", "trace_id")

    def __init__(
        self, name: str, attributes: Mapping[str, AttributeValue] | None, tracer: Tracer
    ) -> None:
        self.span, self.trace_id, self.context = _start_root(name, attributes, tracer)

    def finish(self, exc: BaseException | None) -> None:
        _end_root(self.span, exc)

    async def finish_async(self, exc: BaseException | None) -> None:
        _end_root(self.span, exc)


class Workflow:
    """A workflow root: a sync/async context manager and a decorator (see :func:`workflow`).

    As a context manager one object may be entered again after it exits, but not while it is
    active; as a decorator every call is its own workflow run.
    """

    __slots__ = ("_attributes", "_name", "_span", "_token", "_trace_id", "_tracer_provider")

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
        self._span: Span | None = None  # the root while a ``with`` run is active
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
        return trace.INVALID_SPAN if self._span is None else self._span

    def _tracer(self) -> Tracer:
        provider = self._tracer_provider
        return _tracer_of(trace.get_tracer_provider() if provider is None else provider)

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> Workflow:
        if self._span is not None:
            raise RuntimeError(f"workflow {self.name!r} is already active; call workflow() again")
        span, self._trace_id, context = _start_root(
            self._name or "workflow", self._attributes, self._tracer()
        )
        self._token = _internals.attach_context(context)
        self._span = span
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span, token = self._span, self._token
        self._span = self._token = None
        if span is None or token is None:
            return
        detach(token)  # first, as in every wrapped call (see kilostar_otel._calls)
        _end_root(span, exc)

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
            return _Run(name, self._attributes, self._tracer())

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
