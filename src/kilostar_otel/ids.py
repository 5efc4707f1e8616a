"""Id generation and the request-id validation policy.

A request id arrives from clients (``X-Request-Id``) and from upstream baggage, so it is untrusted
input: only ids that match :data:`REQUEST_ID_PATTERN` are ever accepted or written to a header.
"""

from __future__ import annotations

import os
import re
from collections import deque
from typing import Final

__all__ = [
    "REQUEST_ID_MAX_LENGTH",
    "REQUEST_ID_PATTERN",
    "is_valid_request_id",
    "is_valid_trace_id",
    "new_request_id",
    "new_trace_id",
]

#: Longest request id accepted. 200 is Heroku's documented upper bound for ``X-Request-ID`` and
#: comfortably above UUIDs (36), ``req-<32 hex>`` (36), nginx ``$request_id`` (32) and cloud gateway
#: ids (AWS ``X-Amzn-RequestId`` 36, Cloudflare ``CF-Ray`` ~20, Azure ``X-Azure-Ref`` ~100).
REQUEST_ID_MAX_LENGTH = 200

#: Accepted request ids: 1-200 characters of ASCII letters, digits and ``-_.:+/=@``. This admits
#: UUIDs, ``req-<hex>``, base64 ids and ``host:counter`` styles, and excludes everything that could
#: split or forge a header or a log line (CR, LF, spaces, ``,``, ``;``, quotes, non-ASCII).
REQUEST_ID_PATTERN = re.compile(rf"[A-Za-z0-9\-_.:+/=@]{{1,{REQUEST_ID_MAX_LENGTH}}}")

_TRACE_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
_ZERO_TRACE_ID = "0" * 32
_fullmatch_request_id = REQUEST_ID_PATTERN.fullmatch
_fullmatch_trace_id = _TRACE_ID_PATTERN.fullmatch


def is_valid_request_id(value: object) -> bool:
    """Return True if ``value`` is a request id we accept from, and write to, the outside world."""
    return type(value) is str and _fullmatch_request_id(value) is not None


def is_valid_trace_id(value: object) -> bool:
    """Return True if ``value`` is a W3C trace id: 32 lowercase hex digits, not all zeros."""
    return type(value) is str and _fullmatch_trace_id(value) is not None and value != _ZERO_TRACE_ID


# Random bytes for request ids, read from the OS 4 KiB at a time (one system call per 256 ids).
# deque.popleft() is atomic, so threads never share a chunk; a forked child starts empty.
_RANDOM_CHUNK: Final = 16
_RANDOM_BLOCK: Final = 4096
_random_chunks: deque[bytes] = deque()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_random_chunks.clear)


def _random16() -> bytes:
    try:
        return _random_chunks.popleft()
    except IndexError:
        block = os.urandom(_RANDOM_BLOCK)
        _random_chunks.extend(
            block[n : n + _RANDOM_CHUNK] for n in range(_RANDOM_CHUNK, _RANDOM_BLOCK, _RANDOM_CHUNK)
        )
        return block[:_RANDOM_CHUNK]


def new_request_id(prefix: str = "req") -> str:
    """Return a fresh request id, ``<prefix>-<uuid4 hex>`` (the seed's format)."""
    # uuid.uuid4().hex without the UUID object and without a system call per id: 16 random
    # bytes with the version (4) and variant (RFC 4122) bits set.
    value = bytearray(_random16())
    value[6] = value[6] & 0x0F | 0x40
    value[8] = value[8] & 0x3F | 0x80
    return f"{prefix}-{value.hex()}"


def new_trace_id() -> str:
    """Return a fresh workflow trace id: 32 lowercase hex digits, never all zeros."""
    while True:
        value = os.urandom(16).hex()
        if value != _ZERO_TRACE_ID:
            return value
