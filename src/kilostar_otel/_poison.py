"""Poison spans: what would make the back end (or the encoder) reject a whole batch, made safe.

One span can lose its whole batch: text that is not valid UTF-8 (a lone surrogate such as
``"\\ud800"``, which a client can send) fails the protobuf encoding, and one huge attribute makes
the request too large for the back end. :func:`make_safe` runs on the export thread, per batch:
a span whose strings all encode and whose estimated size is within ``max_span_bytes`` is passed
as it is (ASCII text is recognised in constant time); any other span is replaced by a copy with
the bad text escaped (``\\ud800`` as backslash text) and the longest values cut until it fits,
marked with :data:`~kilostar_otel._names.SPAN_CUT_ATTRIBUTE` saying what was done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, Status

from kilostar_otel._names import SPAN_CUT_ATTRIBUTE

__all__ = ["CUT_MARK", "make_safe"]

#: What replaces the end of a value that was cut.
CUT_MARK = "...[cut by kilostar-otel]"
_KEEP_AT_LEAST = 64


def _bad_text(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _value_is_bad(value: object) -> bool:
    if isinstance(value, str):
        return _bad_text(value)
    if isinstance(value, (tuple, list)):
        return any(isinstance(item, str) and _bad_text(item) for item in value)
    return False


def _attributes_bad(attributes: Mapping[str, Any] | None) -> bool:
    if not attributes:
        return False
    return any(_bad_text(key) or _value_is_bad(value) for key, value in attributes.items())


def _span_bad(span: ReadableSpan) -> bool:
    if _bad_text(span.name) or _attributes_bad(span.attributes):
        return True
    description = span.status.description
    if description and _bad_text(description):
        return True
    if any(_bad_text(e.name) or _attributes_bad(e.attributes) for e in span.events):
        return True
    return any(_attributes_bad(link.attributes) for link in span.links)


def _fix(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _bad_text(text) else text


def _fix_value(value: Any) -> Any:
    if isinstance(value, str):
        return _fix(value)
    if isinstance(value, (tuple, list)):
        return tuple(_fix(item) if isinstance(item, str) else item for item in value)
    return value


def _fixed_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {_fix(key): _fix_value(value) for key, value in (attributes or {}).items()}


def _cut(values: list[dict[str, Any]], excess: int) -> int:
    """Cut the longest str/bytes values of ``values`` until ``excess`` bytes are gone."""
    found = [
        (len(value), index, key)
        for index, attributes in enumerate(values)
        for key, value in attributes.items()
        if isinstance(value, (str, bytes)) and len(value) > _KEEP_AT_LEAST + len(CUT_MARK)
    ]
    for length, index, key in sorted(found, reverse=True):
        if excess <= 0:
            break
        keep = max(length - excess - len(CUT_MARK), _KEEP_AT_LEAST)
        value = values[index][key]
        values[index][key] = (
            value[:keep] + CUT_MARK if isinstance(value, str) else value[:keep] + CUT_MARK.encode()
        )
        excess -= length - keep - len(CUT_MARK)
    return excess


def _with_dropped(attributes: dict[str, Any], dropped: int) -> BoundedAttributes:
    bounded = BoundedAttributes(maxlen=None, attributes=attributes, immutable=False)
    bounded.dropped = dropped
    return bounded


def _listed(items: list[Any], dropped: int) -> BoundedList[Any]:
    unbounded: Any = None  # typed ``int`` before SDK 1.43; None means no limit on every release
    bounded = BoundedList.from_seq(unbounded, items)
    bounded.dropped = dropped
    return bounded


def _safe_copy(span: ReadableSpan, size: int, max_span_bytes: int) -> ReadableSpan:
    what: list[str] = []
    bad = _span_bad(span)
    if bad:
        what.append("encoding")
    span_attributes = _fixed_attributes(span.attributes)
    event_attributes = [_fixed_attributes(e.attributes) for e in span.events]
    excess = size - max_span_bytes
    if excess > 0:
        _cut([span_attributes, *event_attributes], excess)
        what.append("size")
    span_attributes[SPAN_CUT_ATTRIBUTE] = ",".join(what)
    events = [
        Event(_fix(e.name), _with_dropped(attrs, e.dropped_attributes), e.timestamp)
        for e, attrs in zip(span.events, event_attributes, strict=True)
    ]
    links = [
        Link(
            link.context, _with_dropped(_fixed_attributes(link.attributes), link.dropped_attributes)
        )
        for link in span.links
    ]
    status = span.status
    if status.description and _bad_text(status.description):
        status = Status(status.status_code, _fix(status.description))
    copy = ReadableSpan(
        name=_fix(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_with_dropped(span_attributes, span.dropped_attributes),
        events=_listed(events, span.dropped_events),
        links=_listed(links, span.dropped_links),
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
    return copy


def make_safe(
    spans: Sequence[ReadableSpan], sizes: Sequence[int], max_span_bytes: int
) -> tuple[Sequence[ReadableSpan], int]:
    """``spans`` with every poison span replaced by a safe, marked copy; and how many were."""
    changed = 0
    result: list[ReadableSpan] | None = None
    for index, (span, size) in enumerate(zip(spans, sizes, strict=True)):
        if size <= max_span_bytes and not _span_bad(span):
            continue
        if result is None:
            result = list(spans)
        result[index] = _safe_copy(span, size, max_span_bytes)
        changed += 1
    return (spans if result is None else result), changed
