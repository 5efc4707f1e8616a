"""``KiloStarPropagator``: the request id on the wire, beside W3C ``traceparent`` and ``baggage``.

It writes ``x-request-id`` and makes sure the ``baggage`` header carries ``kilostar.request_id``;
it reads either (the header wins by default), validates, and never raises. Register it in code
with :func:`set_global` or with ``OTEL_PROPAGATORS=tracecontext,baggage,kilostar``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    get_current_span,
    set_span_in_context,
)

from kilostar_otel import _w3c
from kilostar_otel.context import (
    BAGGAGE_KEY,
    _get_current,
    context_with_request_id,
    request_id_from,
)
from kilostar_otel.ids import is_valid_request_id

__all__ = [
    "REQUEST_ID_HEADER",
    "BaggagePropagator",
    "KiloStarPropagator",
    "TraceContextPropagator",
    "default_propagator",
    "extract",
    "inject",
    "set_global",
]

#: Header that carries the request id (read in any case, written lower-case).
REQUEST_ID_HEADER = "x-request-id"

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _single_value(values: object) -> str | None:
    """The one value of a header that may arrive as a string or as several lines.

    Repeated lines with the same value count once; lines that disagree are ambiguous and count as
    absent (the caller then regenerates rather than guessing).
    """
    if values is None:
        return None
    if type(values) is str:
        return values.strip(" \t")
    found: str | None = None
    try:
        for value in values if isinstance(values, Iterable) else ():
            if type(value) is bytes:
                value = value.decode("latin-1")
            if type(value) is not str:
                return None
            value = value.strip(" \t")
            if found is None:
                found = value
            elif value != found:
                return None
    except Exception:
        return None
    return found


class KiloStarPropagator(TextMapPropagator):
    """Carries the request id as ``x-request-id`` and as the baggage entry ``kilostar.request_id``.

    Args:
        prefer: which incoming source wins when both carry a valid id, ``"header"`` or
            ``"baggage"``.
        header_name: the request-id header (matched in any case when extracting).
        inject_header: write the request-id header.
        inject_baggage: write the ``baggage`` header: the context's baggage, which holds
            ``kilostar.request_id`` while an id is bound (the same entries a W3C baggage
            propagator writes, so the two agree in any order).
        validator: the request-id policy; ids it rejects are treated as absent.
    """

    def __init__(
        self,
        *,
        prefer: Literal["header", "baggage"] = "header",
        header_name: str = REQUEST_ID_HEADER,
        inject_header: bool = True,
        inject_baggage: bool = True,
        validator: Callable[[object], bool] = is_valid_request_id,
    ) -> None:
        if prefer not in ("header", "baggage"):
            raise ValueError(f"prefer must be 'header' or 'baggage', not {prefer!r}")
        if type(header_name) is not str or _TOKEN_RE.fullmatch(header_name) is None:
            raise ValueError(f"header_name must be an HTTP header name, not {header_name!r}")
        self._prefer_header = prefer == "header"
        self._header = header_name.lower()
        self._header_variants = tuple(
            dict.fromkeys((self._header, header_name, header_name.title(), header_name.upper()))
        )
        self._inject_header = inject_header
        self._inject_baggage = inject_baggage
        self._valid = validator
        self._fields = {self._header} | ({"baggage"} if inject_baggage else set())

    # -- extract ------------------------------------------------------------------------------

    def _header_id(self, carrier: Any, getter: Getter[Any]) -> str | None:
        values = None
        for name in self._header_variants:
            values = getter.get(carrier, name)
            if values is not None:
                break
        else:
            for key in getter.keys(carrier):
                if type(key) is str and key.lower() == self._header:
                    values = getter.get(carrier, key)
                    break
        value = _single_value(values)
        return value if value and self._valid(value) else None

    def _baggage_id(self, carrier: Any, getter: Getter[Any]) -> str | None:
        values = getter.get(carrier, "baggage")
        if values is None:
            return None
        if isinstance(values, str):
            header = values
        else:
            header = ",".join(v for v in values if type(v) is str)
        value = _w3c.baggage_value(header, BAGGAGE_KEY)
        return value if value and self._valid(value) else None

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """Return ``context`` (default: the current one) with the carrier's valid request id bound.

        With no valid id in the carrier the context is returned unchanged. Never raises.
        """
        ctx = _get_current() if context is None else context
        try:
            if self._prefer_header:
                request_id = self._header_id(carrier, getter) or self._baggage_id(carrier, getter)
            else:
                request_id = self._baggage_id(carrier, getter) or self._header_id(carrier, getter)
            if request_id is None:
                return ctx
            return context_with_request_id(ctx, request_id)
        except Exception:
            return ctx

    # -- inject -------------------------------------------------------------------------------

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Write the context's request id (if valid) and baggage into ``carrier``; never raises."""
        try:
            ctx = _get_current() if context is None else context
            request_id = request_id_from(ctx)
            if request_id and not self._valid(request_id):
                request_id = ""
            if request_id and self._inject_header:
                setter.set(carrier, self._header, request_id)
            if self._inject_baggage:
                header = _baggage_header(ctx.get(_BAGGAGE_KEY))
                if header:
                    setter.set(carrier, "baggage", header)
        except Exception:
            return

    @property
    def fields(self) -> set[str]:
        """The header names :meth:`inject` writes."""
        return set(self._fields)


# The last baggage dict formatted, and its header: contexts share their (copy-on-write) baggage
# dict, so a request's spans and outgoing calls reuse one formatting.
_last_baggage: tuple[object, str] = (None, "")


def _baggage_header(bag: object) -> str:
    global _last_baggage
    cached_bag, cached_header = _last_baggage
    if cached_bag is bag:
        return cached_header
    header = _w3c.format_baggage(bag) if bag and type(bag) is dict else ""
    _last_baggage = (bag, header)
    return header


def _get_any_case(carrier: Any, getter: Getter[Any], name: str) -> list[str] | None:
    """All values of header ``name`` (lower-case), however the carrier spells it."""
    values = getter.get(carrier, name)
    if values is not None:
        return values
    found: list[str] | None = None
    for key in getter.keys(carrier):
        if type(key) is str and key != name and key.lower() == name:
            more = getter.get(carrier, key)
            if more:
                found = [*(found or ()), *more]
    return found


class BaggagePropagator(TextMapPropagator):
    """W3C ``baggage``, within the W3C limits, that never raises and never logs header content.

    Extract merges the carrier's entries into the context's baggage (malformed members and members
    past a limit are dropped one by one); inject writes the context's baggage. Values are
    percent-encoded so that OpenTelemetry's ``W3CBaggagePropagator`` reads them back unchanged.
    """

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """Return ``context`` (default: the current one) with the carrier's baggage merged in."""
        ctx = _get_current() if context is None else context
        try:
            values = _get_any_case(carrier, getter, "baggage")
            if not values:
                return ctx
            if isinstance(values, str):
                header = values
            else:
                header = ",".join(v for v in values if type(v) is str)
            entries = _w3c.parse_baggage(header)
            if not entries:
                return ctx
            bag = ctx.get(_BAGGAGE_KEY)
            merged = {**bag, **entries} if bag and type(bag) is dict else entries
            return Context({**ctx, _BAGGAGE_KEY: merged})
        except Exception:
            return ctx

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Write the context's baggage as one ``baggage`` header; never raises."""
        try:
            ctx = _get_current() if context is None else context
            header = _baggage_header(ctx.get(_BAGGAGE_KEY))
            if header:
                setter.set(carrier, "baggage", header)
        except Exception:
            return

    @property
    def fields(self) -> set[str]:
        """The header names :meth:`inject` writes."""
        return {"baggage"}


class TraceContextPropagator(TextMapPropagator):
    """W3C Trace Context (level 2) ``traceparent``/``tracestate``, where OTel's own one falls short.

    Unlike ``TraceContextTextMapPropagator`` it treats repeated ``traceparent`` lines as invalid
    (the trace restarts instead of silently taking the first line), keeps a ``tracestate`` whose
    members repeat a key (the first wins), accepts level-2 keys (``@`` anywhere, up to 256
    characters, a leading digit), and truncates a ``tracestate`` beyond 512 characters the way
    level 2 recommends. A ``tracestate`` with an invalid member or more than 32 members is
    discarded whole, as the W3C test suite expects. ``traceparent`` is matched in any case.
    """

    _TRACEPARENT = "traceparent"
    _TRACESTATE = "tracestate"

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """Return ``context`` (default: a new root context) with the carrier's remote parent span.

        An absent, invalid or repeated ``traceparent`` leaves the context without a parent, so the
        next span starts a new trace; ``tracestate`` is read only beside a valid ``traceparent``.
        Never raises.
        """
        ctx = Context() if context is None else context
        try:
            value = _w3c.single_traceparent(_get_any_case(carrier, getter, self._TRACEPARENT))
            span_context = _w3c.parse_traceparent(value)
            if span_context is None:
                return ctx
            trace_state = _w3c.parse_tracestate(_get_any_case(carrier, getter, self._TRACESTATE))
            if trace_state is not None:
                span_context = SpanContext(
                    span_context.trace_id,
                    span_context.span_id,
                    is_remote=True,
                    trace_flags=span_context.trace_flags,
                    trace_state=trace_state,
                )
            return set_span_in_context(NonRecordingSpan(span_context), ctx)
        except Exception:
            return ctx

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Write the context's span as ``traceparent`` (and ``tracestate``); never raises."""
        try:
            span_context = get_current_span(context).get_span_context()
            if not span_context.is_valid:
                return
            setter.set(carrier, self._TRACEPARENT, _w3c.format_traceparent(span_context))
            if span_context.trace_state:
                setter.set(carrier, self._TRACESTATE, span_context.trace_state.to_header())
        except Exception:
            return

    @property
    def fields(self) -> set[str]:
        """The header names :meth:`inject` writes."""
        return {self._TRACEPARENT, self._TRACESTATE}


def default_propagator() -> TextMapPropagator:
    """Return the recommended propagator: W3C trace context, W3C baggage, then kilostar."""
    return CompositePropagator(
        [TraceContextPropagator(), BaggagePropagator(), KiloStarPropagator(inject_baggage=False)]
    )


def set_global(propagator: TextMapPropagator | None = None) -> TextMapPropagator:
    """Install ``propagator`` (default: :func:`default_propagator`) as the global propagator."""
    from opentelemetry import propagate  # imported late: it loads our entry point on import

    propagator = default_propagator() if propagator is None else propagator
    propagate.set_global_textmap(propagator)
    return propagator


def inject(carrier: dict[str, str], context: Context | None = None) -> dict[str, str]:
    """Inject the current context into ``carrier`` with the global propagator; return it."""
    from opentelemetry import propagate

    propagate.inject(carrier, context=context)
    return carrier


def extract(carrier: Mapping[str, Any], context: Context | None = None) -> Context:
    """Extract a context from ``carrier`` with the global propagator (never raises)."""
    from opentelemetry import propagate

    try:
        return propagate.extract(carrier, context=context)
    except Exception:
        return get_current() if context is None else context
