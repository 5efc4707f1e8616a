"""Zero-code set-up: the entry points ``opentelemetry-instrument`` loads.

Opt in with ``OTEL_PROPAGATORS=tracecontext,baggage,kilostar``. Then, whichever distro and
configurator ``opentelemetry-instrument`` picks, :func:`install_span_processor` (a post-instrument
hook) adds the :class:`KiloStarSpanProcessor` to the SDK provider. With
``OTEL_PYTHON_CONFIGURATOR=kilostar`` the :class:`KiloStarConfigurator` builds the provider with
the processor and the :class:`~kilostar_otel.sampling.LinkAwareSampler` around
``OTEL_TRACES_SAMPLER``. Without the opt-in, both behave exactly like the SDK's defaults.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace

# The module is marked "type: ignore" upstream, so mypy sees no names in it.
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Sampler

from kilostar_otel._export import mark_processor_installed
from kilostar_otel._internals import SDKConfigurator
from kilostar_otel._names import ENTRY_POINT_NAME
from kilostar_otel.configure import has_kilostar_processor
from kilostar_otel.processor import KiloStarSpanProcessor
from kilostar_otel.sampling import LinkAwareSampler, sampler_from_env

__all__ = ["KiloStarConfigurator", "KiloStarDistro", "install_span_processor", "opted_in"]

_log = logging.getLogger(__name__)


def opted_in() -> bool:
    """True when ``OTEL_PROPAGATORS`` names ``kilostar`` or ``OTEL_PYTHON_CONFIGURATOR`` is ours."""
    propagators = os.environ.get("OTEL_PROPAGATORS", "")
    names = {part.strip() for part in propagators.split(",")}
    return (
        ENTRY_POINT_NAME in names
        or os.environ.get("OTEL_PYTHON_CONFIGURATOR", "").strip() == ENTRY_POINT_NAME
    )


class KiloStarConfigurator(SDKConfigurator):
    """The SDK's configurator plus, when opted in, our span processor and link-aware sampler."""

    def _configure(self, **kwargs: Any) -> None:
        if opted_in():
            kwargs["span_processors"] = [
                KiloStarSpanProcessor(),
                *(kwargs.get("span_processors") or ()),
            ]
            if kwargs.get("sampler") is None:
                root: Sampler
                try:
                    root = sampler_from_env()
                except ValueError as exc:
                    # Zero-code start-up must not fail: fall back like the SDK does, but say so.
                    _log.warning("kilostar: %s; using parentbased_always_on", exc)
                    root = DEFAULT_ON
                kwargs["sampler"] = LinkAwareSampler(root)
        super()._configure(**kwargs)  # type: ignore[no-untyped-call]
        provider = trace.get_tracer_provider()
        if opted_in() and isinstance(provider, TracerProvider):
            mark_processor_installed(provider)


def install_span_processor() -> None:
    """Post-instrument hook: add the KiloStar span processor to the global SDK provider, once.

    Runs after any configurator; does nothing unless opted in or when the processor is there.
    Never raises (start-up of the instrumented program must not fail because of it).
    """
    try:
        if not opted_in():
            return
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider) and not has_kilostar_processor(provider):
            provider.add_span_processor(KiloStarSpanProcessor())
            mark_processor_installed(provider)
    except Exception:
        _log.exception("kilostar: could not add the KiloStar span processor")


class KiloStarDistro(BaseDistro):  # type: ignore[misc]
    """Defaults like ``opentelemetry-distro`` (OTLP exporters over gRPC), plus our configurator
    when opted in, so ``pip install kilostar-otel`` is enough for ``opentelemetry-instrument``."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "otlp")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "otlp")
        os.environ.setdefault("OTEL_LOGS_EXPORTER", "otlp")
        os.environ.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        if opted_in():
            os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", ENTRY_POINT_NAME)
