"""Link-aware sampling: a workflow root is sampled exactly when the request that started it was.

A workflow root has no parent (it starts its own trace), so a parent-based sampler treats it as a
fresh root and samples it independently of its request: with a ratio sampler, Jaeger then shows
links that point at nothing. :class:`LinkAwareSampler` decides such a root from its Link instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from kilostar_otel._guard import internal_error

__all__ = ["LinkAwareSampler", "sampler_from_env", "sampler_from_name"]

#: The variables that name the sampler and its argument (configure() reads them through its
#: settings table, which takes these names and :data:`DEFAULT_SAMPLER` from here).
SAMPLER_ENV: Final = "OTEL_TRACES_SAMPLER"
SAMPLER_ARG_ENV: Final = "OTEL_TRACES_SAMPLER_ARG"
#: The sampler when ``OTEL_TRACES_SAMPLER`` is unset or blank (the specification's default).
DEFAULT_SAMPLER: Final = "parentbased_always_on"

_RATIO_SAMPLERS: Final = {
    "traceidratio": TraceIdRatioBased,
    "parentbased_traceidratio": ParentBasedTraceIdRatio,
}
_FIXED_SAMPLERS: Final[dict[str, Sampler]] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": DEFAULT_ON,
    "parentbased_always_off": DEFAULT_OFF,
}
_SAMPLER_ENTRY_POINTS: Final = "opentelemetry_traces_sampler"


class LinkAwareSampler(Sampler):
    """Decides a parentless span that has Links from those Links; defers everything else.

    A span with no valid parent and at least one valid Link (a :func:`~kilostar_otel.workflow`
    root links to its request) is sampled when any linked span was sampled and dropped when none
    was, so both ends of a request/workflow link are kept or dropped together. Spans with a
    parent, and roots without links, are decided by ``root`` (e.g. ``ParentBased(...)``).
    """

    def __init__(self, root: Sampler = DEFAULT_ON) -> None:
        self._root = root

    @property
    def root(self) -> Sampler:
        """The sampler that decides everything that is not a linked root."""
        return self._root

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Sample a linked root like its linked spans; otherwise ask ``root``."""
        if links:
            try:
                if not get_current_span(parent_context).get_span_context().is_valid:
                    linked = [link.context for link in links if link.context.is_valid]
                    if linked:
                        if any(ctx.trace_flags.sampled for ctx in linked):
                            return SamplingResult(
                                Decision.RECORD_AND_SAMPLE, attributes, trace_state
                            )
                        return SamplingResult(Decision.DROP, None, trace_state)
            except Exception as exc:  # a malformed link: let the root sampler decide
                internal_error("LinkAwareSampler.should_sample", exc)
        return self._root.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """``LinkAware{<root sampler>}``."""
        return f"LinkAware{{{self._root.get_description()}}}"


def sampler_from_name(name: str, arg: str | float | None = None) -> Sampler:
    """Build the sampler called ``name`` in ``OTEL_TRACES_SAMPLER`` terms (``arg``: its argument).

    Built-in names (``always_on``, ``parentbased_traceidratio``, ...) and samplers registered in
    the ``opentelemetry_traces_sampler`` entry-point group are accepted. The ratio samplers need
    ``0 <= arg <= 1`` (default 1.0). Raises :class:`ValueError` for anything else.
    """
    key = name.strip().lower()
    if key in _FIXED_SAMPLERS:
        return _FIXED_SAMPLERS[key]
    if key in _RATIO_SAMPLERS:
        return _RATIO_SAMPLERS[key](_ratio(arg))
    from importlib.metadata import entry_points

    found = list(entry_points(group=_SAMPLER_ENTRY_POINTS, name=name.strip()))
    if not found:
        known = ", ".join(sorted({*_FIXED_SAMPLERS, *_RATIO_SAMPLERS}))
        raise ValueError(f"unknown sampler {name!r}; use one of {known} or a registered sampler")
    factory = found[0].load()
    sampler = factory(None if arg is None else str(arg))
    if not isinstance(sampler, Sampler):
        raise ValueError(f"sampler entry point {name!r} did not return a Sampler")
    return sampler


def _ratio(arg: str | float | None) -> float:
    if arg is None or (isinstance(arg, str) and not arg.strip()):
        return 1.0
    try:
        ratio = float(arg)
    except ValueError:
        raise ValueError(f"sampler ratio must be a number in [0, 1], not {arg!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"sampler ratio must be in [0, 1], not {ratio}")
    return ratio


def sampler_from_env() -> Sampler:
    """The sampler named by ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (strictly)."""
    # As configure()'s settings table reads them: stripped, and blank counts as unset.
    name = os.environ.get(SAMPLER_ENV, "").strip() or DEFAULT_SAMPLER
    arg = os.environ.get(SAMPLER_ARG_ENV, "").strip() or None
    return sampler_from_name(name, arg)
