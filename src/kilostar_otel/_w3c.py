"""W3C header codecs: ``traceparent``/``tracestate`` (Trace Context level 2) and ``baggage``.

Private helpers shared by the propagator and the snapshot code. They never raise on bad input and
never log header content: invalid input is simply treated as absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote

from opentelemetry.trace import SpanContext, TraceFlags, TraceState

from kilostar_otel._headers import OWS as _OWS
from kilostar_otel._headers import TOKEN_PATTERN
from kilostar_otel._internals import checked_trace_state

__all__ = [
    "BAGGAGE_MAX_BYTES",
    "BAGGAGE_MAX_MEMBERS",
    "BAGGAGE_MAX_MEMBER_BYTES",
    "baggage_value",
    "format_baggage",
    "format_traceparent",
    "parse_baggage",
    "parse_traceparent",
    "parse_tracestate",
    "single_traceparent",
]

# --- traceparent -------------------------------------------------------------------------------

_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACEPARENT_MAX = 512


def parse_traceparent(value: object) -> SpanContext | None:
    """Parse one ``traceparent`` value into a remote :class:`SpanContext`, or None if invalid.

    Follows level 2: version ``ff`` is invalid; version ``00`` is exactly 55 characters; a higher
    version may carry more fields after a ``-``; trace id and parent id must not be all zeros.
    """
    if type(value) is not str or len(value) > _TRACEPARENT_MAX:
        return None
    value = value.strip(_OWS)
    match = _TRACEPARENT_RE.match(value)
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex = match.groups()
    if version == "ff":
        return None
    if version == "00":
        if len(value) != 55:
            return None
    elif len(value) > 55 and value[55] != "-":
        return None
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(int(flags_hex, 16)),
    )


#: Trace flags defined by level 2 (``sampled`` 0x01, ``random`` 0x02); the others MUST be sent as 0.
_KNOWN_FLAGS = 0x03


def format_traceparent(span_context: SpanContext) -> str:
    """Format a span context as a version-00 ``traceparent`` value (unknown flags set to zero)."""
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags) & _KNOWN_FLAGS:02x}"
    )


def single_traceparent(values: object) -> str | None:
    """The one ``traceparent`` value of a carrier field, or None when absent or repeated.

    A request with several ``traceparent`` lines is invalid (the W3C test suite expects a new
    trace), so repeated lines count as no parent at all rather than "the first one wins".
    """
    if values is None:
        return None
    if type(values) is str:
        return values
    if type(values) is bytes:
        return values.decode("latin-1")
    if isinstance(values, (list, tuple)):
        if len(values) != 1:
            return None
        return single_traceparent(values[0]) if type(values[0]) in (str, bytes) else None
    return None


# --- tracestate --------------------------------------------------------------------------------

# Level 2 key grammar: ``key = ( lcalpha / DIGIT ) 0*255 ( keychar )`` with ``@`` an ordinary key
# character (level 1 split keys into ``tenant@system`` with 241/14-character parts). It admits every
# level-1 key, so nothing valid before is rejected now.
_TS_KEY_RE = re.compile(r"[a-z0-9][_0-9a-z\-*/@]{0,255}")
_TS_VALUE_RE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_TS_MAX_MEMBERS = 32
_TS_PROPAGATE_LENGTH = 512
_TS_LARGE_MEMBER = 128
# The longest header 32 valid members can make (32 x 513 characters and 31 commas) plus room for
# optional white space; anything longer is invalid and discarded without being split.
_TS_MAX_INPUT = 32 * 513 + 31 + 1024


def parse_tracestate(values: Iterable[object] | None) -> TraceState | None:
    """Parse ``tracestate`` header lines (combined with ``,``) into a :class:`TraceState`.

    Keys follow the level-2 grammar (``@`` anywhere, up to 256 characters). The header is all or
    nothing, as the W3C test suite expects: one invalid member, or more than 32 members, discards
    the whole ``tracestate`` (None). For a duplicated key the first (most recent) member is kept.
    A valid header longer than 512 characters loses members longer than 128 characters first,
    then members from the end, as Trace Context level 2 recommends for propagation.
    """
    if values is None:
        return None
    lines = [v for v in values if type(v) is str]
    if not lines:
        return None
    header = ",".join(lines)
    if len(header) > _TS_MAX_INPUT:
        return None
    members: dict[str, str] = {}
    count = 0
    for raw in header.split(","):
        member = raw.strip(_OWS)
        if not member:
            continue
        count += 1
        if count > _TS_MAX_MEMBERS:
            return None
        key, eq, val = member.partition("=")
        if not eq or _TS_KEY_RE.fullmatch(key) is None or _TS_VALUE_RE.fullmatch(val) is None:
            return None
        if key not in members:
            members[key] = val
    if not members:
        return None
    pairs = list(members.items())
    if _tracestate_length(pairs) > _TS_PROPAGATE_LENGTH:
        pairs = _truncate_tracestate(pairs)
    return checked_trace_state(pairs)


def _tracestate_length(pairs: list[tuple[str, str]]) -> int:
    return sum(len(k) + len(v) + 1 for k, v in pairs) + max(len(pairs) - 1, 0)


def _truncate_tracestate(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    large = [p for p in pairs if len(p[0]) + len(p[1]) + 1 > _TS_LARGE_MEMBER]
    for pair in reversed(large):
        if _tracestate_length(pairs) <= _TS_PROPAGATE_LENGTH:
            break
        pairs.remove(pair)
    while pairs and _tracestate_length(pairs) > _TS_PROPAGATE_LENGTH:
        pairs.pop()
    return pairs


# --- baggage -----------------------------------------------------------------------------------

BAGGAGE_MAX_BYTES = 8192
BAGGAGE_MAX_MEMBERS = 180
BAGGAGE_MAX_MEMBER_BYTES = 4096
_BAGGAGE_KEY_RE = TOKEN_PATTERN  # baggage keys are RFC 9110 tokens
_BAGGAGE_VALUE_RE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
# Characters left as they are when encoding a value; '+' and '%' are always percent-encoded so that
# peers that decode with ``unquote_plus`` (OpenTelemetry Python) read the same value back.
_VALUE_SAFE = "!#$&'()*/:<=>?@[]^`{|}"
# Keys must be tokens: other characters are percent-encoded (and decoded when parsing), which is
# what OpenTelemetry's own baggage propagators do, so any key round-trips between them.
_KEY_SAFE = "!#$&'*-.^_`|~"


def parse_baggage(header: object) -> dict[str, str]:
    """Parse one W3C ``baggage`` value into ``{key: value}`` (values percent-decoded).

    Bounded by the W3C limits (8,192 bytes, 180 members, 4,096 bytes a member); members that are
    malformed or beyond a limit are dropped, properties are dropped, the last duplicate wins.
    Percent-encoded keys are decoded, as OpenTelemetry's propagators do.
    """
    entries: dict[str, str] = {}
    if type(header) is not str or not header:
        return entries
    if len(header) > BAGGAGE_MAX_BYTES:
        # Keep whole members only: a member cut in half would be read as a different value.
        header = header[: BAGGAGE_MAX_BYTES + 1].rsplit(",", 1)[0]
    count = 0
    for raw in header.split(","):
        if count >= BAGGAGE_MAX_MEMBERS:
            break
        if len(raw) > BAGGAGE_MAX_MEMBER_BYTES:
            continue
        value_part = raw.split(";", 1)[0]
        key, eq, value = value_part.partition("=")
        key = key.strip(_OWS)
        value = value.strip(_OWS)
        if (
            not eq
            or _BAGGAGE_KEY_RE.fullmatch(key) is None
            or _BAGGAGE_VALUE_RE.fullmatch(value) is None
        ):
            continue
        try:
            decoded = unquote(value, errors="strict")
            if "%" in key:
                key = unquote(key, errors="strict")
        except UnicodeDecodeError:
            continue
        entries[key] = decoded
        count += 1
    return entries


def baggage_value(header: object, key: str) -> str | None:
    """Return the decoded value of ``key`` in a ``baggage`` header, or None."""
    if type(header) is not str or key not in header:
        return None
    return parse_baggage(header).get(key)


def format_baggage(entries: Mapping[str, object]) -> str:
    """Format baggage entries as a W3C ``baggage`` value within the W3C limits.

    Members past a limit are left out; values, and keys that are not tokens, are
    percent-encoded as UTF-8.
    """
    parts: list[str] = []
    length = 0
    for key, value in entries.items():
        if type(key) is not str or not key:
            continue
        if "%" in key or "+" in key or _BAGGAGE_KEY_RE.fullmatch(key) is None:
            key = quote(key, safe=_KEY_SAFE)
        member = f"{key}={quote(str(value), safe=_VALUE_SAFE)}"
        if len(member) > BAGGAGE_MAX_MEMBER_BYTES:
            continue
        added = len(member) + (1 if parts else 0)
        if length + added > BAGGAGE_MAX_BYTES:
            continue
        parts.append(member)
        length += added
        if len(parts) >= BAGGAGE_MAX_MEMBERS:
            break
    return ",".join(parts)
