"""HTTP header grammar shared by the propagators, the middlewares and ``configure()``.

Two rules, each in one place: what a header name (an RFC 9110 ``token``) is, and what "the one
value" of a header is when a carrier holds it as a string, as bytes or as several lines.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["OWS", "TOKEN_PATTERN", "header_lines", "is_token", "one_value"]

#: RFC 9110 ``token``: header names, and W3C baggage keys.
TOKEN_PATTERN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Optional whitespace around header values and list members.
OWS: Final = " \t"

_token_fullmatch = TOKEN_PATTERN.fullmatch


def is_token(value: object) -> bool:
    """True if ``value`` is a string usable as a header name (an RFC 9110 token)."""
    return type(value) is str and _token_fullmatch(value) is not None


def header_lines(values: object) -> list[str]:
    """The lines of one carrier field: a ``str``, ``bytes`` (latin-1) or a list/tuple of them.

    Anything else (and any element of another type) counts as absent. Never raises: a carrier is
    untrusted input, so its values are only looked at through exact types.
    """
    if type(values) is str:
        return [values]
    if type(values) is bytes:
        return [values.decode("latin-1")]
    if type(values) is list or type(values) is tuple:
        lines = []
        for value in values:
            if type(value) is str:
                lines.append(value)
            elif type(value) is bytes:
                lines.append(value.decode("latin-1"))
        return lines
    return []


def one_value(values: object) -> str | None:
    """The one value of a header that may come as several lines or as comma-joined values.

    Each line is split on ``,`` (a list-valued header, RFC 9110 5.3) and each part stripped of
    optional whitespace. Repeats of the same value count once; values that disagree are ambiguous
    and count as absent (None), as does a field with no lines. A comma is never part of a valid
    request id, so splitting on it cannot cut a valid one in two.
    """
    if type(values) is list and len(values) == 1:
        line = values[0]
        if type(line) is str and "," not in line:
            return line.strip(OWS)  # the usual single line, without the general loop
    found: str | None = None
    for line in header_lines(values):
        for part in line.split(","):
            value = part.strip(OWS)
            if found is None:
                found = value
            elif value != found:
                return None
    return found
