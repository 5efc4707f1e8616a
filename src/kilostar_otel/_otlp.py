"""A fast OTLP trace encoder: finished spans straight to ``ExportTraceServiceRequest`` bytes.

The OTLP exporters build one protobuf object per span, attribute and value, and hash every span's
resource through ``json.dumps``; in a Python process that shares one core between the application
and its exporter, that is most of the export cost. This writes the protobuf wire format directly
and produces the message the SDK's ``encode_spans`` produces (same fields, same grouping by
resource and scope). Anything it does not handle exactly the same way (a value the SDK would log
and skip, an integer out of int64 range, an unencodable string) raises
:class:`UnsupportedSpanError`, and the caller falls back to the SDK's encoder for that batch.
The common span (no trace state or status; scalar attribute values) is written by the C
extension ``_otlp_native`` when it was built, to the same bytes; every other span here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from struct import Struct
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from kilostar_otel._internals import (
    attribute_items,
    grpc_exporter_with_encoder,
    sdk_encodes_none,
    span_wire_fields,
)

if TYPE_CHECKING:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

__all__ = [
    "EncodedSpans",
    "UnsupportedSpanError",
    "encode_fields",
    "encode_span",
    "encode_span_with_sdk",
    "encode_trace_request",
    "grpc_span_exporter_class",
    "join_encoded_spans",
    "join_queued",
]

_FIXED64: Final = Struct("<Q").pack
# trace_id (field 1, 16 bytes, as two big-endian halves) and span_id (field 2, 8 bytes)
_IDS: Final = Struct(">2sQQ2sQ").pack
_PARENT: Final = Struct(">2sQ").pack  # parent_span_id, field 4
_U64: Final = (1 << 64) - 1
_START_END: Final = Struct("<BQBQ").pack  # fields 7 and 8, both fixed64
_DOUBLE: Final = Struct("<d").pack
_FIXED32: Final = Struct("<I").pack
_ONE_BYTE: Final = tuple(bytes((n,)) for n in range(128))
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1

# Span flags as the SDK sets them: "has is_remote" always, "is_remote" for a remote parent/link.
_FLAGS_LOCAL: Final = b"\x85\x01" + _FIXED32(0x100)
_FLAGS_REMOTE: Final = b"\x85\x01" + _FIXED32(0x300)
_LINK_FLAGS_LOCAL: Final = b"\x35" + _FIXED32(0x100)
_LINK_FLAGS_REMOTE: Final = b"\x35" + _FIXED32(0x300)
# SpanKind.INTERNAL..CONSUMER (0..4) are the protobuf enum values 1..5, field 6.
_KINDS: Final = tuple(b"\x30" + _ONE_BYTE[n + 1] for n in range(5))
_KIND_FIELDS: Final = {id(kind): _KINDS[n] for n, kind in enumerate(SpanKind)}
_UNSET: Final = StatusCode.UNSET
_EMPTY_STATUS: Final = b"\x7a\x00"
# Encoded attribute fields (tag, key and value) with a string or integer value, and span names,
# seen recently: spans of one request repeat their keys and most of their values (the request id,
# a route, a status code).
_STR_FIELDS: dict[tuple[bytes, str, Any], bytes] = {}
_INT_FIELDS: dict[tuple[bytes, str, Any], bytes] = {}
_NAMES: dict[str, bytes] = {}
_CACHED_FIELD_BYTES: Final = 512
_CACHE_SIZE: Final = 4096
_CACHED_STRING_LENGTH: Final = 256


# The common span (no trace state or status; scalar attributes) encoded in C,
# byte for byte as ``_python_span`` below encodes it; None where the extension was not built (the
# package installs without a compiler). ``encode(fields)`` returns None for any other span.
try:
    from kilostar_otel import _otlp_native

    _otlp_native.setup(tuple(SpanKind), attribute_items, DEFAULT_TRACE_STATE)
    _native_encode: Callable[[tuple[Any, ...]], bytes | None] | None = _otlp_native.encode
    _Parts = Callable[[Any], tuple[bytes, bytes]]
    _native_join: Callable[[list[Any], _Parts, _Parts], bytes | None] | None = _otlp_native.join
except Exception:  # pragma: no cover - not built (no C compiler), or built from older source
    _native_encode = None  # (tests/otlp/test_native_encoder.py fails the suite for either)
    _native_join = None


class UnsupportedSpanError(ValueError):
    """The batch holds something only the SDK's encoder handles the SDK's way."""


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _ONE_BYTE[n]
    if n < 0:
        n += 1 << 64  # int64 two's complement, ten bytes
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    size = len(payload)
    if size < 128:
        return tag + _ONE_BYTE[size] + payload
    if size < 16384:
        return tag + bytes(((size & 0x7F) | 0x80, size >> 7)) + payload
    return tag + _varint(size) + payload


def _string(tag: bytes, value: str) -> bytes:
    try:
        return _field(tag, value.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsupportedSpanError("string is not UTF-8 encodable") from None


def _any_value(value: object) -> bytes:
    """An ``AnyValue`` body, with the SDK's order of type checks."""
    kind = type(value)
    if kind is str:
        return _string(b"\x0a", value)  # type: ignore[arg-type]
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
            raise UnsupportedSpanError("integer out of int64 range")
        return b"\x18" + _varint(value)  # type: ignore[arg-type]
    if kind is float:
        return b"\x21" + _DOUBLE(value)
    return _any_value_slow(value)


# Before 1.43 the SDK skips ``None`` values: such a batch is handed back to the SDK's encoder so
# the bytes on the wire stay the SDK's.
_sdk_encodes_none = functools.cache(sdk_encodes_none)


def _any_value_slow(value: object) -> bytes:
    if value is None:
        if not _sdk_encodes_none():
            raise UnsupportedSpanError("None value (this SDK logs and skips it)")
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _string(b"\x0a", str.__str__(value))
    if isinstance(value, int):
        number = int(value)
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise UnsupportedSpanError("integer out of int64 range")
        return b"\x18" + _varint(number)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(float(value))
    if isinstance(value, bytes):
        return _field(b"\x3a", bytes(value))
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_key_value(b"\x0a", str(k), v) for k, v in value.items()))
    raise UnsupportedSpanError(f"attribute value of type {type(value).__name__}")


def _key_value(tag: bytes, key: str, value: object) -> bytes:
    body = _field(b"\x12", _any_value(value))
    if key:
        body = _string(b"\x0a", key) + body
    return _field(tag, body)


def _attributes(tag: bytes, attributes: Mapping[str, object] | None) -> bytes:
    if not attributes:
        return b""
    return _items(tag, attribute_items(attributes))


def _items(tag: bytes, items: Iterable[tuple[str, object]]) -> bytes:
    out = []
    strings, ints = _STR_FIELDS, _INT_FIELDS
    for key, value in items:
        kind = type(value)
        if kind is str:
            cache: dict[tuple[bytes, str, Any], bytes] | None = strings
        elif kind is int:  # not bool: True == 1 would share an entry
            cache = ints
        else:
            cache = None
        field = cache.get((tag, key, value)) if cache is not None else None
        if field is None:
            field = _key_value(tag, key, value)
            if cache is not None and len(field) <= _CACHED_FIELD_BYTES:
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                cache[(tag, key, value)] = field
        out.append(field)
    return b"".join(out)


def _uint(tag: bytes, value: int) -> bytes:
    return tag + _varint(value) if value else b""


def _trace_state(tag: bytes, trace_state: Any) -> bytes:
    if trace_state is None:
        return b""
    header = ",".join([f"{key}={value}" for key, value in trace_state.items()])
    return _string(tag, header) if header else b""


def encode_span(span: Any) -> bytes:
    """One finished span as a ``ScopeSpans.spans`` field (what :func:`join_encoded_spans` joins):
    in C where the extension handles the span, else in Python, to the same bytes.

    Raises :class:`UnsupportedSpanError` when only the SDK's encoder handles the span its way.
    """
    try:
        return encode_fields(span_wire_fields(span))
    except UnsupportedSpanError:
        raise
    except Exception as exc:  # a span shaped unlike the SDK's: let the SDK encode it
        raise UnsupportedSpanError(f"{type(exc).__name__} while encoding") from None


def encode_fields(fields: tuple[Any, ...]) -> bytes:
    """:func:`encode_span` of a span already read by ``_internals.span_wire_fields``.

    Raises :class:`UnsupportedSpanError` when only the SDK's encoder handles the span its way,
    and any other exception for fields shaped unlike the SDK's span.
    """
    if _native_encode is not None:
        encoded = _native_encode(fields)
        if encoded is not None:
            return encoded
    return _python_span(fields)


def encode_span_with_sdk(span: Any) -> bytes:
    """As :func:`encode_span`, with the SDK's encoder (for a span the fast one does not handle)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    (message,) = encode_spans([span]).resource_spans[0].scope_spans[0].spans
    return _field(b"\x12", message.SerializeToString())


def _python_span(fields: tuple[Any, ...]) -> bytes:
    (
        trace_id,
        span_id,
        trace_state,
        parent_id,
        parent_is_remote,
        name,
        kind,
        start,
        end,
        status,
        attributes,
        dropped_attributes,
        events,
        dropped_events,
        links,
        dropped_links,
        _sampled,
        _resource,
        _scope,
    ) = fields
    parts = [_IDS(b"\x0a\x10", trace_id >> 64, trace_id & _U64, b"\x12\x08", span_id)]
    if trace_state:
        parts.append(_trace_state(b"\x1a", trace_state))
    if parent_id is not None:
        parts.append(_PARENT(b"\x22\x08", parent_id))
    if name:
        encoded_name = _NAMES.get(name)
        if encoded_name is None:
            encoded_name = _string(b"\x2a", name)
            if len(name) <= _CACHED_STRING_LENGTH:
                if len(_NAMES) >= _CACHE_SIZE:
                    _NAMES.clear()
                _NAMES[name] = encoded_name
        parts.append(encoded_name)
    kind_field = _KIND_FIELDS.get(id(kind))  # by identity: hashing an Enum member is slow
    parts.append(kind_field if kind_field is not None else _KINDS[kind.value])
    if start and end:
        parts.append(_START_END(0x39, start, 0x41, end))
    else:
        if start:
            parts.append(b"\x39" + _FIXED64(start))
        if end:
            parts.append(b"\x41" + _FIXED64(end))
    if attributes:
        parts.append(_items(b"\x4a", attributes.items()))
    # Dropped counts are written also when every attribute (event, link) was dropped.
    if dropped_attributes:
        parts.append(_uint(b"\x50", dropped_attributes))
    if events:
        for event in events:
            body = b"\x09" + _FIXED64(event.timestamp) if event.timestamp else b""
            if event.name:
                body += _string(b"\x12", event.name)
            body += _attributes(b"\x1a", event.attributes)
            body += _uint(b"\x20", event.dropped_attributes)
            parts.append(_field(b"\x5a", body))
    if dropped_events:
        parts.append(_uint(b"\x60", dropped_events))
    if links:
        for link in links:
            linked = link.context
            body = (
                _link_ids(linked)
                + _attributes(b"\x22", link.attributes)
                + _uint(b"\x28", link.dropped_attributes)
                + (_LINK_FLAGS_REMOTE if linked.is_remote else _LINK_FLAGS_LOCAL)
            )
            parts.append(_field(b"\x6a", body))
    if dropped_links:
        parts.append(_uint(b"\x70", dropped_links))
    if status is None:
        parts.append(_EMPTY_STATUS)
    else:
        code_enum = status.status_code
        description = status.description
        if code_enum is _UNSET and not description:
            parts.append(_EMPTY_STATUS)
        elif (code := code_enum.value) or description:
            body = (_string(b"\x12", description) if description else b"") + _uint(b"\x18", code)
            parts.append(_field(b"\x7a", body))
        else:
            parts.append(_EMPTY_STATUS)
    parts.append(_FLAGS_REMOTE if parent_is_remote else _FLAGS_LOCAL)
    return _field(b"\x12", b"".join(parts))  # ScopeSpans.spans


def _link_ids(linked: Any) -> bytes:
    trace_id = linked.trace_id
    return _IDS(b"\x0a\x10", trace_id >> 64, trace_id & _U64, b"\x12\x08", linked.span_id)


def _scope(scope: Any) -> bytes:
    if scope is None:
        return b"\x0a\x00"
    body = b""
    if scope.name:
        body += _string(b"\x0a", scope.name)
    if scope.version:
        body += _string(b"\x12", scope.version)
    body += _attributes(b"\x1a", scope.attributes)
    return _field(b"\x0a", body)


def _find(groups: list[Any], key: object) -> int:
    for index, known in enumerate(groups):
        if known is key or known == key:
            return index
    groups.append(key)
    return len(groups) - 1


class EncodedSpans:
    """Spans already encoded, joined into one serialized ``ExportTraceServiceRequest``.

    What the export pipeline hands the gRPC exporter instead of ``ReadableSpan`` objects; its
    length is the number of spans (the exporter counts them).
    """

    __slots__ = ("count", "payload")

    def __init__(self, payload: bytes, count: int) -> None:
        self.payload = payload
        self.count = count

    def __len__(self) -> int:
        return self.count


def _resource_parts(resource: Any) -> tuple[bytes, bytes]:
    """The encoded fields of a ``ResourceSpans`` around its scopes: the resource and its
    ``schema_url`` (empty when it has none)."""
    schema_url = resource.schema_url
    return (
        _field(b"\x0a", _attributes(b"\x0a", resource.attributes)),
        _string(b"\x1a", schema_url) if schema_url else b"",
    )


def _scope_parts(scope: Any) -> tuple[bytes, bytes]:
    """The encoded fields of a ``ScopeSpans`` around its spans: the scope and its
    ``schema_url`` (empty when it has none)."""
    schema_url = scope.schema_url if scope is not None else None
    return _scope(scope), _string(b"\x1a", schema_url) if schema_url else b""


def join_encoded_spans(entries: Iterable[tuple[Any, Any, bytes]]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` of ``(resource, scope, encoded span)``
    entries (spans from :func:`encode_span`), grouped by resource and scope as the SDK does."""
    resources: list[Any] = []
    scopes: list[list[Any]] = []
    grouped: list[list[list[bytes]]] = []
    seen: dict[tuple[int, int], list[bytes]] = {}
    for resource, scope, encoded in entries:
        ids = (id(resource), id(scope))
        spans = seen.get(ids)
        if spans is None:
            r = _find(resources, resource)
            if r == len(scopes):
                scopes.append([])
                grouped.append([])
            s = _find(scopes[r], scope)
            if s == len(grouped[r]):
                grouped[r].append([])
            spans = seen[ids] = grouped[r][s]
        spans.append(encoded)
    out = []
    for resource, resource_scopes, encoded_scopes in zip(resources, scopes, grouped, strict=True):
        resource_field, resource_schema = _resource_parts(resource)
        body = [resource_field]
        for scope, scope_spans in zip(resource_scopes, encoded_scopes, strict=True):
            scope_field, scope_schema = _scope_parts(scope)
            body.append(_field(b"\x12", scope_field + b"".join(scope_spans) + scope_schema))
        body.append(resource_schema)
        out.append(_field(b"\x0a", b"".join(body)))
    return b"".join(out)


def join_queued(entries: list[tuple[int, Any, Any, Any]]) -> bytes:
    """:func:`join_encoded_spans` for the export queue's ``(size, encoded span, resource,
    scope)`` entries: in C when the extension was built (one copy of each span's bytes)."""
    if _native_join is not None:
        joined = _native_join(entries, _resource_parts, _scope_parts)
        if joined is not None:
            return joined
    return join_encoded_spans((entry[2], entry[3], entry[1]) for entry in entries)


def encode_trace_request(spans: Sequence[Any] | EncodedSpans) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` for ``spans`` (SDK ``ReadableSpan`` objects,
    or :class:`EncodedSpans`, which already is one).

    Raises :class:`UnsupportedSpanError` when the SDK's encoder must handle the batch instead.
    """
    if isinstance(spans, EncodedSpans):
        return spans.payload
    try:
        return join_encoded_spans(
            (span.resource, span.instrumentation_scope or None, encode_span(span)) for span in spans
        )
    except UnsupportedSpanError:
        raise
    except Exception as exc:  # a span shaped unlike the SDK's: let the SDK encode it
        raise UnsupportedSpanError(f"{type(exc).__name__} while encoding") from None


@functools.cache
def grpc_span_exporter_class() -> type[OTLPSpanExporter]:
    """The SDK's OTLP/gRPC span exporter, encoding with :func:`encode_trace_request`.

    Only the encoding step changes (retries, TLS, headers, compression and timeouts are the SDK's);
    a batch the fast encoder does not handle goes through the SDK's own encoder.
    """
    return grpc_exporter_with_encoder(encode_trace_request, UnsupportedSpanError)
