"""``configure()``'s settings: one table of arguments and ``OTEL_*`` variables, one frozen result.

Each row of :data:`PARAMS` names a ``configure()`` argument, the variables that fill it when the
argument is left out (the first one set to a non-blank value wins), its default, and the parser
that checks a value and says where a bad one came from. :func:`resolve_settings` looks every row
up (an argument beats its variables, a variable beats the default), applies the few rules that
tie settings together, and returns a :class:`Settings`. This module is the only place that reads
these variables; a bad value raises ``ValueError`` here, at start-up, never on a request.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar
from urllib.parse import urlsplit

from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.util.types import AttributeValue

from kilostar_otel._headers import is_token
from kilostar_otel._names import DISTRIBUTION_NAME
from kilostar_otel._version import __version__
from kilostar_otel.sampling import (
    DEFAULT_SAMPLER,
    SAMPLER_ARG_ENV,
    SAMPLER_ENV,
    sampler_from_name,
)

__all__ = [
    "COMPRESSION",
    "COMPRESSIONS",
    "DEFAULT_ENDPOINTS",
    "DISABLED",
    "ENDPOINT",
    "EXPORTER",
    "EXPORTERS",
    "EXIT_TIMEOUT_MILLIS",
    "EXPORT_TIMEOUT_MILLIS",
    "Found",
    "HEADERS",
    "INSECURE",
    "LINK_AWARE_SAMPLING",
    "MAX_EXPORT_BATCH_SIZE",
    "MAX_QUEUE_BYTES",
    "MAX_QUEUE_SIZE",
    "MAX_SPAN_BYTES",
    "PARAMS",
    "PROPAGATOR",
    "PROTOCOL",
    "PROTOCOLS",
    "Param",
    "RESOURCE_ATTRIBUTES",
    "SAMPLER",
    "SAMPLER_ARG",
    "SCHEDULE_DELAY_MILLIS",
    "SERVICE_NAME",
    "SET_GLOBAL",
    "STRICT",
    "Settings",
    "TIMEOUT",
    "build_propagator",
    "lookup",
    "resolve_settings",
]

# The warnings are configure()'s: they keep its logger name.
_log = logging.getLogger("kilostar_otel.configure")

_T = TypeVar("_T")

PROTOCOLS: Final = ("grpc", "http/protobuf")
COMPRESSIONS: Final = ("gzip", "deflate", "none")
EXPORTERS: Final = ("otlp", "console", "none")
DEFAULT_ENDPOINTS: Final = {
    "grpc": "http://localhost:4317",
    "http/protobuf": "http://localhost:4318/v1/traces",
}
_BAD_VALUE_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


# -- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param(Generic[_T]):
    """One setting: its ``configure()`` argument, the variables that fill it, and its default.

    ``parse(value, source)`` checks an argument or a variable's text and returns the typed value;
    ``source`` is the argument's or the variable's name, for the ``ValueError`` message.
    ``exporter_env`` lists variables the OTLP exporter reads itself when the argument is left out.
    """

    argument: str
    env: tuple[str, ...]
    default: _T
    parse: Callable[[Any, str], _T]
    doc: str
    exporter_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class Found(Generic[_T]):
    """A looked-up value and where it came from: the argument, a variable, or ``"default"``."""

    value: _T
    source: str


def lookup(param: Param[_T], argument: object = None, *, use_env: bool = True) -> Found[_T]:
    """``argument`` if given, else the first of ``param.env`` set (not blank), else the default."""
    if argument is not None:
        return Found(param.parse(argument, param.argument), param.argument)
    if use_env:
        for name in param.env:
            text = os.environ.get(name, "").strip()
            if text:
                return Found(param.parse(text, name), name)
    return Found(param.default, "default")


# -- parsers --------------------------------------------------------------------------------------


def _flag(value: object, source: str) -> bool:
    if isinstance(value, str) and source.startswith(("OTEL_", "KILOSTAR_")):
        text = value.lower()  # only "true", in any case, is true (the specification's rule)
        if text not in ("true", "false"):
            _log.warning("%s=%r is not 'true' or 'false'; treating it as false", source, text[:32])
        return text == "true"
    return bool(value)


def _positive_int(value: object, source: str) -> int:
    try:
        number = value if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise ValueError(f"{source} must be a positive integer, not {value!r}") from None
    if isinstance(number, bool) or number <= 0:
        raise ValueError(f"{source} must be a positive integer, not {value!r}")
    return number


def _positive_seconds(value: object, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{source} must be a positive number of seconds, not {value!r}")
    return float(value)


def _service_name(value: object, source: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{source} must be a non-empty string, not {value!r}")
    return value


def _attributes(value: Mapping[str, AttributeValue], source: str) -> dict[str, AttributeValue]:
    return dict(value)


def _protocol(value: object, source: str) -> str:
    text = str(value).strip().lower()
    if text not in PROTOCOLS:
        hint = " (OTLP/JSON is not supported by the Python exporter)" if "json" in text else ""
        raise ValueError(f"{source} must be 'grpc' or 'http/protobuf', not {text!r}{hint}")
    return text


def _compression(value: object, source: str) -> str:
    text = str(value).strip().lower()
    if text not in COMPRESSIONS:
        raise ValueError(f"{source} must be 'gzip', 'deflate' or 'none', not {text!r}")
    return text


def _endpoint_text(value: object, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{source} must be a URL such as http://localhost:4317, not {value!r}")
    return value.strip()


def _headers(value: Mapping[str, str], source: str) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, text in value.items():
        if not is_token(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if not isinstance(text, str) or _BAD_VALUE_RE.search(text):
            raise ValueError(f"header {name!r} must have a string value without control chars")
        checked[name.lower()] = text  # gRPC metadata keys must be lower case
    return checked


def _exporter(value: object, source: str) -> SpanExporter | str:
    if isinstance(value, SpanExporter):
        return value
    kind = value.strip().lower() if isinstance(value, str) else None
    if kind in EXPORTERS:
        return kind
    if source == "exporter":
        raise ValueError(
            f"exporter must be a SpanExporter or one of {', '.join(EXPORTERS)}, not {value!r}"
        )
    raise ValueError(
        f"{source} must be one of {', '.join(EXPORTERS)} for configure(), not {kind!r}; "
        "pass exporter=<SpanExporter> for anything else"
    )


def _sampler(value: object, source: str) -> Sampler | str:
    if isinstance(value, (Sampler, str)):
        return value
    raise ValueError(f"{source} must be a Sampler or a sampler name, not {value!r}")


def _sampler_arg(value: float | str, source: str) -> float | str:
    return value


def _propagator(value: object, source: str) -> TextMapPropagator | str:
    if isinstance(value, str) and source != "propagator":
        return value  # names from OTEL_PROPAGATORS, loaded by build_propagator()
    if not isinstance(value, TextMapPropagator):
        raise ValueError(f"{source} must be a TextMapPropagator, not {value!r}")
    return value


# fmt: off
# Batch defaults: the specification's delays, but a queue of 8,192 and batches of 1,024 instead
# of 2,048 and 512: with the fast encoder the pipeline keeps up with far higher span rates,
# larger batches halve the per-request cost, and the room absorbs the gaps while a batch is on
# the wire (docs/benchmarks.md; about 20 MB at most for small spans). A default batch larger than
# a configured queue shrinks to the queue.
SERVICE_NAME: Final = Param[str | None](
    "service_name", (), None, _service_name,
    "service.name of the resource (the SDK reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES)")
RESOURCE_ATTRIBUTES: Final = Param[dict[str, AttributeValue] | None](
    "resource_attributes", (), None, _attributes,
    "more resource attributes; they win over OTEL_RESOURCE_ATTRIBUTES per key")
ENDPOINT: Final = Param[str | None](
    "endpoint", ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"), None,
    _endpoint_text, "where spans go (default: localhost, the protocol's port)")
PROTOCOL: Final = Param[str](
    "protocol", ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"), "grpc",
    _protocol, "'grpc' or 'http/protobuf'")
HEADERS: Final = Param[dict[str, str] | None](
    "headers", (), None, _headers, "extra request headers / gRPC metadata",
    exporter_env=("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"))
INSECURE: Final = Param[bool](
    "insecure", ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"), False,
    _flag, "plaintext for a gRPC endpoint written as host:port")
COMPRESSION: Final = Param[str](
    "compression", ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"),
    "none", _compression, "'gzip', 'deflate' or 'none'")
TIMEOUT: Final = Param[float | None](
    "timeout", (), None, _positive_seconds, "seconds per export request",
    exporter_env=("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"))
EXPORTER: Final = Param[SpanExporter | str](
    "exporter", ("OTEL_TRACES_EXPORTER",), "otlp", _exporter,
    "a SpanExporter, or 'otlp', 'console', 'none'")
SAMPLER: Final = Param[Sampler | str](
    "sampler", (SAMPLER_ENV,), DEFAULT_SAMPLER, _sampler,
    "a Sampler, or a sampler name")
SAMPLER_ARG: Final = Param[float | str | None](
    "sampler_arg", (SAMPLER_ARG_ENV,), None, _sampler_arg,
    "the named sampler's argument (the ratio); its variable counts only with OTEL_TRACES_SAMPLER")
LINK_AWARE_SAMPLING: Final = Param[bool](
    "link_aware_sampling", (), True, _flag, "wrap the sampler in LinkAwareSampler")
PROPAGATOR: Final = Param[TextMapPropagator | str](
    "propagator", ("OTEL_PROPAGATORS",), "", _propagator,
    "the propagator (default: tracecontext, baggage, kilostar)")
SET_GLOBAL: Final = Param[bool](
    "set_global", (), True, _flag, "install the provider and propagator globally")
DISABLED: Final = Param[bool](
    "disabled", ("OTEL_SDK_DISABLED",), False, _flag, "record and export nothing")
MAX_QUEUE_SIZE: Final = Param[int](
    "max_queue_size", ("OTEL_BSP_MAX_QUEUE_SIZE",), 8192, _positive_int,
    "spans the batch pipeline holds; more are dropped and counted")
SCHEDULE_DELAY_MILLIS: Final = Param[int](
    "schedule_delay_millis", ("OTEL_BSP_SCHEDULE_DELAY",), 5000, _positive_int,
    "longest wait between two exports")
MAX_EXPORT_BATCH_SIZE: Final = Param[int](
    "max_export_batch_size", ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE",), 1024, _positive_int,
    "spans per export request (at most max_queue_size)")
EXPORT_TIMEOUT_MILLIS: Final = Param[int](
    "export_timeout_millis", ("OTEL_BSP_EXPORT_TIMEOUT",), 30000, _positive_int,
    "the batch pipeline's export timeout")
MAX_QUEUE_BYTES: Final = Param[int](
    "max_queue_bytes", ("KILOSTAR_BSP_MAX_QUEUE_BYTES",), 64 * 1024 * 1024, _positive_int,
    "bytes the batch queue holds (64 MiB); more spans are dropped and counted")
EXIT_TIMEOUT_MILLIS: Final = Param[int](
    "exit_timeout_millis", ("KILOSTAR_EXIT_TIMEOUT_MILLIS",), 5000, _positive_int,
    "longest the at-exit flush holds the process up (the back end may be down)")
MAX_SPAN_BYTES: Final = Param[int](
    "max_span_bytes", ("KILOSTAR_MAX_SPAN_BYTES",), 1024 * 1024, _positive_int,
    "estimated bytes one span may send (1 MiB); longer values are cut and the span marked")
STRICT: Final = Param[bool](
    "strict", ("KILOSTAR_STRICT",), False, _flag,
    "a second configure() that conflicts with the first raises instead of warning")
# fmt: on

#: Every ``configure()`` argument, in signature order.
PARAMS: Final[Mapping[str, Param[Any]]] = {
    param.argument: param
    for param in (
        SERVICE_NAME,
        ENDPOINT,
        PROTOCOL,
        HEADERS,
        INSECURE,
        COMPRESSION,
        TIMEOUT,
        EXPORTER,
        RESOURCE_ATTRIBUTES,
        SAMPLER,
        SAMPLER_ARG,
        LINK_AWARE_SAMPLING,
        PROPAGATOR,
        SET_GLOBAL,
        DISABLED,
        MAX_QUEUE_SIZE,
        SCHEDULE_DELAY_MILLIS,
        MAX_EXPORT_BATCH_SIZE,
        EXPORT_TIMEOUT_MILLIS,
        MAX_QUEUE_BYTES,
        EXIT_TIMEOUT_MILLIS,
        MAX_SPAN_BYTES,
        STRICT,
    )
}


# -- the result -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything ``configure()`` resolved; equal settings mean ``configure()`` has nothing to do.

    ``sampler`` is a ``Sampler`` or a ``(name, argument)`` pair and ``propagator`` a propagator or
    the ``OTEL_PROPAGATORS`` text, so that two resolutions of the same input compare equal.
    """

    disabled: bool
    resource: dict[str, Any]
    exporter: str  # "otlp", "console", "none" or "custom"
    custom_exporter: SpanExporter | None
    protocol: str
    endpoint: str
    headers: dict[str, str] | None  # None: the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)HEADERS
    compression: str
    timeout: float | None
    sampler: Sampler | tuple[str, str | float | None]
    link_aware: bool
    propagator: TextMapPropagator | str
    max_queue_size: int
    schedule_delay_millis: int
    max_export_batch_size: int
    export_timeout_millis: int
    max_queue_bytes: int
    exit_timeout_millis: int
    max_span_bytes: int
    set_global: bool = field(compare=False)
    strict: bool = field(compare=False, default=False)


def resolve_settings(
    *,
    service_name: str | None,
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | None,
    insecure: bool | None,
    compression: str | None,
    timeout: float | None,
    exporter: SpanExporter | str | None,
    resource_attributes: Mapping[str, AttributeValue] | None,
    sampler: Sampler | str | None,
    sampler_arg: float | str | None,
    link_aware_sampling: bool,
    propagator: TextMapPropagator | None,
    set_global: bool,
    disabled: bool | None,
    max_queue_size: int | None,
    schedule_delay_millis: int | None,
    max_export_batch_size: int | None,
    export_timeout_millis: int | None,
    max_queue_bytes: int | None,
    exit_timeout_millis: int | None,
    max_span_bytes: int | None,
    strict: bool | None,
) -> Settings:
    """Look every row of :data:`PARAMS` up and check how they fit; raise ``ValueError`` if not."""
    is_disabled = lookup(DISABLED, disabled).value
    resource = _resource(lookup(SERVICE_NAME, service_name).value, resource_attributes)

    exporter_value = lookup(EXPORTER, exporter).value
    custom = exporter_value if isinstance(exporter_value, SpanExporter) else None
    kind = "custom" if custom is not None else str(exporter_value)

    resolved_protocol = lookup(PROTOCOL, protocol).value
    resolved_endpoint = _endpoint_url(resolved_protocol, lookup(ENDPOINT, endpoint), insecure)
    resolved_timeout = lookup(TIMEOUT, timeout).value

    found_sampler = lookup(SAMPLER, sampler)
    sampler_spec: Sampler | tuple[str, str | float | None]
    if isinstance(found_sampler.value, Sampler):
        sampler_spec = found_sampler.value
    else:
        # OTEL_TRACES_SAMPLER_ARG belongs to OTEL_TRACES_SAMPLER, not to a sampler argument.
        arg = lookup(SAMPLER_ARG, sampler_arg, use_env=found_sampler.source != "sampler").value
        sampler_from_name(found_sampler.value, arg)  # validates the name and the argument
        sampler_spec = (found_sampler.value, arg)

    max_queue = lookup(MAX_QUEUE_SIZE, max_queue_size).value
    found_batch = lookup(MAX_EXPORT_BATCH_SIZE, max_export_batch_size)
    max_batch = found_batch.value
    if found_batch.source == "default":
        max_batch = min(max_batch, max_queue)  # the default batch fits any configured queue
    if max_batch > max_queue:
        raise ValueError(
            f"max_export_batch_size ({max_batch}) must not exceed max_queue_size ({max_queue})"
        )
    resolved_propagator = lookup(PROPAGATOR, propagator).value

    return Settings(
        disabled=is_disabled,
        resource=resource,
        exporter=kind,
        custom_exporter=custom,
        protocol=resolved_protocol,
        endpoint=resolved_endpoint,
        headers=lookup(HEADERS, headers).value,
        compression=lookup(COMPRESSION, compression).value,
        timeout=resolved_timeout,
        sampler=sampler_spec,
        link_aware=lookup(LINK_AWARE_SAMPLING, link_aware_sampling).value,
        propagator=resolved_propagator,
        max_queue_size=max_queue,
        schedule_delay_millis=lookup(SCHEDULE_DELAY_MILLIS, schedule_delay_millis).value,
        max_export_batch_size=max_batch,
        export_timeout_millis=lookup(EXPORT_TIMEOUT_MILLIS, export_timeout_millis).value,
        max_queue_bytes=lookup(MAX_QUEUE_BYTES, max_queue_bytes).value,
        exit_timeout_millis=lookup(EXIT_TIMEOUT_MILLIS, exit_timeout_millis).value,
        max_span_bytes=lookup(MAX_SPAN_BYTES, max_span_bytes).value,
        set_global=lookup(SET_GLOBAL, set_global).value,
        strict=lookup(STRICT, strict).value,
    )


def build_propagator(settings: Settings) -> TextMapPropagator:
    """The propagator ``settings`` names (loading ``OTEL_PROPAGATORS`` entry points)."""
    if isinstance(settings.propagator, TextMapPropagator):
        return settings.propagator
    if not settings.propagator:
        from kilostar_otel.propagation import default_propagator

        return default_propagator()
    from importlib.metadata import entry_points

    from opentelemetry.propagators.composite import CompositePropagator

    propagators: list[TextMapPropagator] = []
    for name in (part.strip() for part in settings.propagator.split(",")):
        if not name:
            continue
        if name.lower() == "none":
            return CompositePropagator([])
        found = list(entry_points(group="opentelemetry_propagator", name=name))
        if not found:
            raise ValueError(f"OTEL_PROPAGATORS names an unknown propagator {name!r}")
        propagators.append(found[0].load()())
    return CompositePropagator(propagators)


# -- rules that tie settings together -------------------------------------------------------------


def _resource(
    service_name: str | None, attributes: Mapping[str, AttributeValue] | None
) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "telemetry.distro.name": DISTRIBUTION_NAME,
        "telemetry.distro.version": __version__,
    }
    merged.update(lookup(RESOURCE_ATTRIBUTES, attributes).value or {})
    if service_name is not None:
        merged["service.name"] = service_name
    return dict(Resource.create(merged).attributes)


def _endpoint_url(protocol: str, found: Found[str | None], insecure: bool | None) -> str:
    """The full endpoint URL (``http(s)://host:port`` for gRPC, the POST URL for HTTP)."""
    raw, source = found.value, found.source
    if raw is None:
        return DEFAULT_ENDPOINTS[protocol]
    if _BAD_VALUE_RE.search(raw) or " " in raw:
        raise ValueError(f"{source} contains whitespace or control characters: {raw!r}")
    if "://" not in raw:
        if protocol != "grpc":
            raise ValueError(f"{source} must start with http:// or https://, not {raw!r}")
        raw = ("http://" if lookup(INSECURE, insecure).value else "https://") + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{source} must use http:// or https://, not {raw!r}")
    try:
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise ValueError(f"{source} has an invalid port: {raw!r}") from None
    if not host:
        raise ValueError(f"{source} has no host: {raw!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{source} must not carry credentials; use headers instead")
    if parts.fragment or (protocol == "grpc" and parts.query):
        raise ValueError(f"{source} must not have a query or fragment: {raw!r}")
    if protocol == "grpc":
        if parts.path not in ("", "/"):
            raise ValueError(f"{source} is a gRPC endpoint and cannot have a path: {raw!r}")
        if port is None:
            raise ValueError(f"{source} needs a port for gRPC (e.g. :4317): {raw!r}")
        return f"{parts.scheme}://{parts.netloc}"
    # OTEL_EXPORTER_OTLP_ENDPOINT is a base URL; the signal's variable is used as written.
    path = parts.path
    if source == "OTEL_EXPORTER_OTLP_ENDPOINT" or (source == "endpoint" and path in ("", "/")):
        path = path.rstrip("/") + "/v1/traces"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{path}{query}"
