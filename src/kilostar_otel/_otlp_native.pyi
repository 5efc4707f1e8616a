"""The common span's OTLP encoding in C (``_otlp_native.c``); see :mod:`kilostar_otel._otlp`."""

from typing import Any

__all__ = ["encode", "set_span_kinds"]

def encode(fields: tuple[Any, ...], /) -> bytes | None:
    """The ``span_wire_fields()`` tuple of a common span as its ``ScopeSpans.spans`` field;
    None for a span only the Python encoder handles."""

def set_span_kinds(kinds: tuple[Any, ...], /) -> None:
    """The ``SpanKind`` members INTERNAL..CONSUMER, compared by identity."""
