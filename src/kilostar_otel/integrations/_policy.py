"""How the ASGI and WSGI middlewares pick a request's id from untrusted input (shared, private).

The outcome for bad input is always the same: an id that is absent, empty, oversized, non-ASCII,
carries CR/LF or other characters outside the policy, or arrives as disagreeing duplicate headers
is ignored; then a valid ``kilostar.request_id`` baggage entry is used (when incoming ids are
trusted), and otherwise a fresh id is generated. Only ids that passed the validator *and* are
visible ASCII are ever bound, logged or echoed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final

from opentelemetry.context import Context

from kilostar_otel import _w3c
from kilostar_otel._headers import OWS, is_token, one_value
from kilostar_otel._internals import BAGGAGE_KEY as OTEL_BAGGAGE_KEY
from kilostar_otel._names import REQUEST_ID_BAGGAGE
from kilostar_otel.ids import is_valid_request_id, new_request_id

__all__ = [
    "PLAIN_VALUE_PATTERN",
    "RequestIdPolicy",
    "allowlist_from",
    "baggage_with_request_id",
    "context_with_allowed_baggage",
]

# Whatever a custom validator says, an id must be visible ASCII to reach a header or a log line.
_HEADER_SAFE_RE: Final = re.compile(r"[\x21-\x7e]{1,1024}")
#: Ids that need no percent-encoding as a baggage value (the default policy minus '+').
PLAIN_VALUE_PATTERN: Final = re.compile(r"[A-Za-z0-9\-_.:/=@]+")


class RequestIdPolicy:
    """Chooses the request id for one request: trusted valid incoming id, else a generated one."""

    __slots__ = (
        "_default_generator",
        "_default_validator",
        "generator",
        "header",
        "trust_incoming",
        "validator",
    )

    def __init__(
        self,
        header_name: str,
        generator: Callable[[], str],
        validator: Callable[[str], bool],
        trust_incoming: bool,
    ) -> None:
        if not is_token(header_name):
            raise ValueError(f"header_name must be an HTTP header name, not {header_name!r}")
        if not callable(generator) or not callable(validator):
            raise TypeError("generator and validator must be callables")
        #: The request-id header, lower-case.
        self.header = header_name.lower()
        self.generator = generator
        self.validator = validator
        self.trust_incoming = bool(trust_incoming)
        # The defaults only ever accept or make visible ASCII within the length limit, so the
        # header-safety check is implied for them (a per-request saving).
        self._default_validator = validator is is_valid_request_id
        self._default_generator = generator is new_request_id

    def accepts(self, value: object) -> bool:
        """True if ``value`` is an id we may bind, log and echo (never raises)."""
        if self._default_validator:
            return is_valid_request_id(value)
        try:
            return (
                type(value) is str
                and _HEADER_SAFE_RE.fullmatch(value) is not None
                and bool(self.validator(value))
            )
        except Exception:
            return False

    def incoming(self, header_lines: Iterable[str], baggage_lines: Iterable[str]) -> str | None:
        """The trusted incoming id: the header's single valid value, else valid baggage."""
        if not self.trust_incoming:
            return None
        value = one_value(header_lines)
        if value is not None and self.accepts(value):
            return value
        if not baggage_lines:
            return None
        lines = [line for line in baggage_lines if REQUEST_ID_BAGGAGE in line]
        if lines:
            value = _w3c.baggage_value(",".join(lines), REQUEST_ID_BAGGAGE)
            if value is not None and self.accepts(value):
                return value
        return None

    def generate(self) -> str:
        """A fresh id from the generator; ``req-<32 hex>`` if it fails or returns no usable id.

        The generator is the app's own code, so its ids skip ``validator`` (meant for incoming
        ids) but must still be 1-1024 visible ASCII characters to reach a header.
        """
        if self._default_generator:
            return new_request_id()
        try:
            value = self.generator()
        except Exception:
            return new_request_id()
        if type(value) is str and _HEADER_SAFE_RE.fullmatch(value) is not None:
            return value
        return new_request_id()

    def choose(self, header_lines: Iterable[str], baggage_lines: Iterable[str]) -> str:
        """The id for this request (see the module docstring for the outcome on bad input)."""
        return self.incoming(header_lines, baggage_lines) or self.generate()


def allowlist_from(keys: Iterable[str] | None) -> frozenset[str] | None:
    """Validate a ``baggage_allowlist`` option: None (keep every entry) or a collection of keys."""
    if keys is None:
        return None
    if isinstance(keys, (str, bytes)):
        raise TypeError("baggage_allowlist must be a collection of keys, not one string")
    allowed = frozenset(keys)
    if not all(type(key) is str and key for key in allowed):
        raise TypeError("baggage_allowlist must hold non-empty strings")
    return allowed


def context_with_allowed_baggage(ctx: Context, allowed: frozenset[str] | None) -> Context:
    """``ctx`` without the baggage entries whose key is not in ``allowed`` (None keeps all)."""
    bag = ctx.get(OTEL_BAGGAGE_KEY)
    if allowed is None or not bag or type(bag) is not dict:
        return ctx
    kept = {key: value for key, value in bag.items() if key in allowed}
    return ctx if len(kept) == len(bag) else Context({**ctx, OTEL_BAGGAGE_KEY: kept})


def baggage_with_request_id(
    baggage_lines: Iterable[str], request_id: str, allowed: frozenset[str] | None = None
) -> str:
    """One ``baggage`` value: the incoming members minus any ``kilostar.request_id``, plus ours.

    Used to rewrite the request as the application sees it, so that an instrumentation placed
    inside the middleware (which extracts again from the headers) reads the chosen id. With
    ``allowed``, incoming members whose key (as written) is not in it are dropped too. Ours comes
    last (the last duplicate wins) and the result stays within the W3C limits.
    """
    members = []
    for line in baggage_lines:
        if allowed is None and REQUEST_ID_BAGGAGE not in line:
            if line.strip(OWS):
                members.append(line)
            continue
        for member in line.split(","):
            key = member.split(";", 1)[0].partition("=")[0].strip(OWS)
            if (
                key != REQUEST_ID_BAGGAGE
                and member.strip(OWS)
                and (allowed is None or key in allowed)
            ):
                members.append(member)
    if PLAIN_VALUE_PATTERN.fullmatch(request_id) is not None:
        ours = f"{REQUEST_ID_BAGGAGE}={request_id}"
    else:
        ours = _w3c.format_baggage({REQUEST_ID_BAGGAGE: request_id})
    header = ",".join([*members, ours])
    if len(header) <= _w3c.BAGGAGE_MAX_BYTES and header.count(",") < _w3c.BAGGAGE_MAX_MEMBERS:
        return header
    return _fit(members, ours)


def _fit(members: list[str], ours: str) -> str:
    """Incoming members, from the first, that fit the W3C limits with ours as the last member.

    A parser drops what lies past 8,192 bytes or 180 members (OpenTelemetry's drops the whole
    header past 8,192), so without this an oversized incoming header would hide the chosen id.
    """
    kept: list[str] = []
    length = len(ours)
    for line in members:
        for member in line.split(","):
            if not member.strip(OWS):
                continue
            length += len(member) + 1
            if len(kept) >= _w3c.BAGGAGE_MAX_MEMBERS - 1 or length > _w3c.BAGGAGE_MAX_BYTES:
                return ",".join([*kept, ours])
            kept.append(member)
    return ",".join([*kept, ours])
