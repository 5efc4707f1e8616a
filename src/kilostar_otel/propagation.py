"""``KiloStarPropagator``: the request id on the wire, beside W3C ``traceparent`` and ``baggage``.

It writes ``x-request-id`` and makes sure the ``baggage`` header carries ``kilostar.request_id``;
it reads either (the header wins by default), validates, and never raises. Register it in code
with :func:`set_global` or with ``OTEL_PROPAGATORS=tracecontext,baggage,kilostar``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

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
from kilostar_otel._guard import internal_error
from kilostar_otel._headers import header_lines, is_token, one_value
from kilostar_otel._idcontext import (
    baggage_of,
    context_with_request_id,
    current_request_id,
    request_id_from,
)
from kilostar_otel._internals import BAGGAGE_KEY, current_context
from kilostar_otel._names import (
    BAGGAGE_HEADER,
    REQUEST_ID_BAGGAGE,
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
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
        if not is_token(header_name):
            raise ValueError(f"header_name must be an HTTP header name, not {header_name!r}")
        self._prefer_header = prefer == "header"
        self._header = header_name.lower()
        self._header_variants = tuple(
            dict.fromkeys((self._header, header_name, header_name.title(), header_name.upper()))
        )
        self._inject_header = inject_header
        self._inject_baggage = inject_baggage
        self._valid = validator
        self._fields = {self._header} | ({BAGGAGE_HEADER} if inject_baggage else set())

    # -- extract ------------------------------------------------------------------------------

    def _header_id(self, carrier: Any, getter: Getter[Any]) -> str | None:
        if _reads_asgi_scope(getter):
            value = one_value(_asgi_lines(carrier, self._header, getter))
            return value if value and self._valid(value) else None
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
        value = one_value(values)
        return value if value and self._valid(value) else None

    def _baggage_id(self, carrier: Any, getter: Getter[Any]) -> str | None:
        if _reads_asgi_scope(getter):
            values: Any = _asgi_lines(carrier, BAGGAGE_HEADER, getter)
        else:
            values = getter.get(carrier, BAGGAGE_HEADER)
        if values is None:
            return None
        value = _w3c.baggage_value(",".join(header_lines(values)), REQUEST_ID_BAGGAGE)
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
        ctx = current_context() if context is None else context
        try:
            if self._prefer_header:
                request_id = self._header_id(carrier, getter) or self._baggage_id(carrier, getter)
            else:
                request_id = self._baggage_id(carrier, getter) or self._header_id(carrier, getter)
            if request_id is None:
                return ctx
            return context_with_request_id(ctx, request_id)
        except Exception as exc:
            internal_error("KiloStarPropagator.extract", exc)
            return ctx

    # -- inject -------------------------------------------------------------------------------

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Write the context's request id and baggage into ``carrier``; never raises.

        An id bound here that fails the request-id policy (any string may be bound) still travels,
        percent-encoded, in the ``baggage`` entry; the request-id header is left out for it, and
        a warning says so once per process.
        """
        try:
            if context is None:
                ctx = current_context()
                request_id = current_request_id()
                bag = ctx.get(BAGGAGE_KEY)
                if request_id != (baggage_of(ctx).get(REQUEST_ID_BAGGAGE) or ""):
                    # The context's entry is stale (see _idcontext): the bound id is the truth.
                    bag = {**baggage_of(ctx), REQUEST_ID_BAGGAGE: request_id}
                    if not request_id:
                        del bag[REQUEST_ID_BAGGAGE]
            else:
                ctx = context
                request_id = request_id_from(ctx)
                bag = ctx.get(BAGGAGE_KEY)
            if request_id and self._inject_header:
                if self._valid(request_id):
                    setter.set(carrier, self._header, request_id)
                else:
                    _warn_header_left_out(self._header)
            if self._inject_baggage:
                header = _baggage_header(bag)
                if header:
                    setter.set(carrier, BAGGAGE_HEADER, header)
        except Exception as exc:
            internal_error("KiloStarPropagator.inject", exc)

    @property
    def fields(self) -> set[str]:
        """The header names :meth:`inject` writes."""
        return set(self._fields)


_log = logging.getLogger("kilostar_otel")
_warned_header: list[bool] = []


def _warn_header_left_out(header: str) -> None:
    """Say once per process why a bound request id is not written to the request-id header."""
    if not _warned_header:
        _warned_header.append(True)
        _log.warning(
            "kilostar_otel: a bound request id does not pass the request-id policy (1-200 "
            "characters of A-Z a-z 0-9 - _ . : + / = @), so it is not written to the %s header; "
            "it travels percent-encoded in the baggage entry %s instead. Receivers validate "
            "incoming ids and treat this one as absent. Logged once per process.",
            header,
            REQUEST_ID_BAGGAGE,
        )


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


def _reads_asgi_scope(getter: object) -> bool:
    """Whether ``getter`` is OpenTelemetry's ``ASGIGetter`` itself (not a subclass, which may
    read headers its own way): its ``get`` matches names in any case, and :func:`_asgi_lines`
    returns what it returns."""
    kind = type(getter)
    known = _ASGI_GETTER_TYPES.get(kind)
    if known is None:
        known = _ASGI_GETTER_TYPES[kind] = (
            kind.__qualname__ == "ASGIGetter"
            and kind.__module__ == "opentelemetry.instrumentation.asgi"
        )
    return known


_ASGI_GETTER_TYPES: dict[type, bool] = {}


def _asgi_lines(carrier: Any, name: str, getter: Getter[Any]) -> list[str] | None:
    """``getter.get(carrier, name)`` for OpenTelemetry's ``ASGIGetter`` and a lower-case
    ``name``, without decoding every header name: an ASCII name is compared as bytes (what
    decoding and lower-casing it gives).

    The same values in the same order, decoded the same way (tested against
    opentelemetry-instrumentation-asgi 0.61b0 and 0.66b2); a scope it cannot read goes to the
    getter itself, so malformed input ends exactly as it would there.
    """
    try:
        headers = carrier.get("headers")
        if not headers:
            return None
        wanted = name.encode("ascii")
        found: list[str] | None = None
        for key, value in headers:
            if type(key) is bytes and key.isascii():
                if key.lower() != wanted:
                    continue
            elif _decode_asgi(key).lower() != name:
                continue
            if found is None:
                found = []
            found.append(_decode_asgi(value))
        return found
    except Exception:
        return getter.get(carrier, name)


def _decode_asgi(item: Any) -> str:
    """An ASGI header name or value as OpenTelemetry's ASGI instrumentation decodes it."""
    try:
        return item.decode("utf-8")  # type: ignore[no-any-return]
    except ValueError:
        return item.decode("unicode_escape")  # type: ignore[no-any-return]


def _get_any_case(carrier: Any, getter: Getter[Any], name: str) -> list[str] | None:
    """All lines of header ``name`` (lower-case), however the carrier spells it; None if absent."""
    if _reads_asgi_scope(getter):
        lines = _asgi_lines(carrier, name, getter)  # matched in any case already
        return header_lines(lines) if lines is not None else None
    values = getter.get(carrier, name)
    if values is not None:
        return header_lines(values)
    found: list[str] | None = None
    for key in getter.keys(carrier):
        if type(key) is str and key != name and key.lower() == name:
            more = header_lines(getter.get(carrier, key))
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
        ctx = current_context() if context is None else context
        try:
            values = _get_any_case(carrier, getter, BAGGAGE_HEADER)
            if not values:
                return ctx
            entries = _w3c.parse_baggage(",".join(values))
            if not entries:
                return ctx
            bag = ctx.get(BAGGAGE_KEY)
            merged = {**bag, **entries} if bag and type(bag) is dict else entries
            return Context({**ctx, BAGGAGE_KEY: merged})
        except Exception as exc:
            internal_error("BaggagePropagator.extract", exc)
            return ctx

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Write the context's baggage as one ``baggage`` header; never raises."""
        try:
            ctx = current_context() if context is None else context
            header = _baggage_header(ctx.get(BAGGAGE_KEY))
            if header:
                setter.set(carrier, BAGGAGE_HEADER, header)
        except Exception as exc:
            internal_error("BaggagePropagator.inject", exc)

    @property
    def fields(self) -> set[str]:
        """The header names :meth:`inject` writes."""
        return {BAGGAGE_HEADER}


class TraceContextPropagator(TextMapPropagator):
    """W3C Trace Context (level 2) ``traceparent``/``tracestate``, where OTel's own one falls short.

    Unlike ``TraceContextTextMapPropagator`` it treats repeated ``traceparent`` lines as invalid
    (the trace restarts instead of silently taking the first line), keeps a ``tracestate`` whose
    members repeat a key (the first wins), accepts level-2 keys (``@`` anywhere, up to 256
    characters, a leading digit), and truncates a ``tracestate`` beyond 512 characters the way
    level 2 recommends. A ``tracestate`` with an invalid member or more than 32 members is
    discarded whole, as the W3C test suite expects. ``traceparent`` is matched in any case.
    """

    _TRACEPARENT = TRACEPARENT_HEADER
    _TRACESTATE = TRACESTATE_HEADER

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
        except Exception as exc:
            internal_error("TraceContextPropagator.extract", exc)
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
        except Exception as exc:
            internal_error("TraceContextPropagator.inject", exc)

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
    except Exception as exc:
        internal_error("extract", exc)
        return get_current() if context is None else context
