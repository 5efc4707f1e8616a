"""Request traces as trees in the terminal, with the workflow traces they started nested inside.

A workflow is its own trace; its root span links to the span that started it. That link is the key:
the workflow's tree is drawn under that span, with the ``trace_id`` to paste into Jaeger. Spans may
arrive in any order; :class:`TraceGrouper` holds a request back until its workflows have arrived.
Rendering uses ``rich`` (the ``cli`` extra) and stays readable without colour.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit

from kilostar_otel._names import (
    REQUEST_ID_ATTRIBUTE,
    TRACE_ID_ATTRIBUTE,
    WORKFLOW_NAME_ATTRIBUTE,
    WORKFLOW_STARTED_EVENT,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

__all__ = [
    "SpanLike",
    "TraceGroup",
    "TraceGrouper",
    "TraceView",
    "build_groups",
    "format_duration",
    "make_console",
    "render_groups",
    "render_text",
]

_HTTP_STATUS_KEYS: Final = ("http.response.status_code", "http.status_code")
_URL_KEYS: Final = ("url.full", "http.url")
#: Width used when the output is not a terminal: long enough that a 32-hex id is never wrapped.
_PIPE_WIDTH: Final = 240


class SpanLike(Protocol):
    """What the tree needs of a span (``kilostar_otel.viewer.ReceivedSpan`` has it all)."""

    @property
    def trace_id(self) -> str: ...
    @property
    def span_id(self) -> str: ...
    @property
    def parent_span_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def start_time_unix_nano(self) -> int: ...
    @property
    def end_time_unix_nano(self) -> int: ...
    @property
    def status_code(self) -> str: ...
    @property
    def status_message(self) -> str: ...
    @property
    def attributes(self) -> Mapping[str, Any]: ...
    @property
    def resource(self) -> Mapping[str, Any]: ...
    @property
    def links(self) -> Sequence[tuple[str, str]]: ...
    @property
    def events(self) -> Sequence[tuple[str, Mapping[str, Any]]]: ...


# -- grouping -----------------------------------------------------------------------------------


@dataclass
class TraceView:
    """One OTel trace: its spans as a forest, and the traces linked under its spans."""

    trace_id: str
    spans: dict[str, SpanLike]
    #: span id -> child spans, by start time; "" holds the spans without a parent in this trace.
    children: dict[str, list[SpanLike]] = field(default_factory=dict)
    #: span id -> workflow traces started under that span, by start time.
    nested: dict[str, list[TraceView]] = field(default_factory=dict)
    #: (trace id, span id) of the span that started this workflow, when it is one.
    anchor: tuple[str, str] | None = None

    @property
    def roots(self) -> list[SpanLike]:
        """Spans whose parent is not in this trace (normally exactly one, the trace's root)."""
        return self.children.get("", [])

    @property
    def has_root(self) -> bool:
        """True once the span that has no parent at all (the true root) has arrived."""
        return any(not s.parent_span_id for s in self.roots)

    @property
    def awaits_callee(self) -> bool:
        """True while a client span has no child: the service it called has not exported yet.

        A service exports on its own batch schedule (5 s by default in the OTel SDK), so its
        server span may arrive seconds after its caller's spans; or never, if it is not traced.
        """
        return any(
            span.kind == "CLIENT" and not self.children.get(span.span_id)
            for span in self.spans.values()
        )

    @property
    def start(self) -> int:
        """Earliest start time of the trace, in Unix nanoseconds."""
        return min(s.start_time_unix_nano for s in self.spans.values())

    @property
    def is_workflow(self) -> bool:
        """True when one of the roots is a ``workflow()`` root span."""
        return any(WORKFLOW_NAME_ATTRIBUTE in s.attributes for s in self.roots)

    def walk(self) -> Iterable[TraceView]:
        """This trace and every trace nested under it, depth first."""
        yield self
        for views in self.nested.values():
            for view in views:
                yield from view.walk()


@dataclass
class TraceGroup:
    """A top-level trace (normally a request) with its nested workflow traces.

    ``missing`` names the trace ids the group expected but did not have when it was made: the
    workflows its spans link to, or, for a workflow shown on its own, the request that started it.
    """

    top: TraceView
    missing: tuple[str, ...] = ()

    @property
    def traces(self) -> list[TraceView]:
        """Every trace of the group, the top one first."""
        return list(self.top.walk())

    @property
    def span_count(self) -> int:
        """Number of spans in the group."""
        return sum(len(view.spans) for view in self.traces)

    @property
    def request_id(self) -> str:
        """The ``kilostar.request_id`` of the group (root span first), or ``""``."""
        for view in self.traces:
            for span in [*view.roots, *view.spans.values()]:
                value = span.attributes.get(REQUEST_ID_ATTRIBUTE)
                if isinstance(value, str) and value:
                    return value
        return ""


def _workflow_anchor(view: TraceView) -> tuple[str, str] | None:
    """The span a workflow trace was started under: its root's link to another trace."""
    for root in view.roots:
        if WORKFLOW_NAME_ATTRIBUTE not in root.attributes:
            continue
        for trace_id, span_id in root.links:
            if trace_id != view.trace_id:
                return (trace_id, span_id)
    return None


def _started_anchors(views: Mapping[str, TraceView]) -> dict[str, tuple[str, str]]:
    """Workflow trace id -> the span whose ``kilostar.workflow.started`` event names it."""
    found: dict[str, tuple[str, str]] = {}
    for view in views.values():
        for span in view.spans.values():
            for name, attributes in span.events:
                trace_id = attributes.get(TRACE_ID_ATTRIBUTE)
                if (
                    name == WORKFLOW_STARTED_EVENT
                    and isinstance(trace_id, str)
                    and trace_id != view.trace_id
                ):
                    found.setdefault(trace_id, (view.trace_id, span.span_id))
    return found


def _expected_traces(view: TraceView) -> set[str]:
    """Workflow trace ids this trace's spans announce (event ``kilostar.workflow.started``)."""
    expected: set[str] = set()
    for span in view.spans.values():
        for name, attributes in span.events:
            trace_id = attributes.get(TRACE_ID_ATTRIBUTE)
            if name == WORKFLOW_STARTED_EVENT and isinstance(trace_id, str):
                expected.add(trace_id)
    expected.discard(view.trace_id)
    return expected


def _start_key(span: SpanLike) -> tuple[int, str]:
    return (span.start_time_unix_nano, span.span_id)


def _views(spans: Iterable[SpanLike]) -> dict[str, TraceView]:
    views: dict[str, TraceView] = {}
    for span in spans:
        view = views.get(span.trace_id)
        if view is None:
            view = views[span.trace_id] = TraceView(span.trace_id, {})
        view.spans.setdefault(span.span_id, span)
    for view in views.values():
        for span in sorted(view.spans.values(), key=_start_key):
            parent = span.parent_span_id if span.parent_span_id in view.spans else ""
            if span.span_id == span.parent_span_id:
                parent = ""
            view.children.setdefault(parent, []).append(span)
        _break_parent_cycles(view)
    return views


def _break_parent_cycles(view: TraceView) -> None:
    """Spans whose parent chain loops (bad data) are unreachable from a root: re-root them."""
    while True:
        reached: set[str] = set()
        stack = [""]
        while stack:
            for child in view.children.get(stack.pop(), []):
                if child.span_id not in reached:
                    reached.add(child.span_id)
                    stack.append(child.span_id)
        lost = [s for s in view.spans.values() if s.span_id not in reached]
        if not lost:
            return
        first = min(lost, key=_start_key)
        siblings = view.children.get(first.parent_span_id, [])
        view.children[first.parent_span_id] = [s for s in siblings if s is not first]
        view.children.setdefault("", []).append(first)


def build_groups(spans: Iterable[SpanLike]) -> list[TraceGroup]:
    """Group spans into traces, nest each workflow under the span that started it (by the link).

    Returns the top-level groups by start time; a workflow whose starting span is not among
    ``spans`` is a group of its own, with the request's trace id in ``missing``.
    """
    views = _views(spans)
    started = _started_anchors(views)
    for view in views.values():
        view.anchor = _workflow_anchor(view) or started.get(view.trace_id)

    tops: list[TraceView] = []
    for view in sorted(views.values(), key=lambda v: (v.start, v.trace_id)):
        anchor = view.anchor
        host = views.get(anchor[0]) if anchor else None
        if anchor is None or host is None or anchor[1] not in host.spans or _cycles(view, views):
            tops.append(view)
            continue
        host.nested.setdefault(anchor[1], []).append(view)

    groups: list[TraceGroup] = []
    for top in tops:
        members = {view.trace_id for view in top.walk()}
        missing: set[str] = set()
        for view in top.walk():
            missing |= _expected_traces(view) - members
        if top.anchor is not None and top.anchor[0] not in members:
            missing.add(top.anchor[0])
        groups.append(TraceGroup(top, tuple(sorted(missing))))
    return groups


def _cycles(view: TraceView, views: Mapping[str, TraceView]) -> bool:
    """True when following anchors from ``view`` comes back to it (then it is drawn at the top)."""
    seen = {view.trace_id}
    anchor = view.anchor
    while anchor is not None:
        if anchor[0] in seen:
            return True
        seen.add(anchor[0])
        host = views.get(anchor[0])
        if host is None or anchor[1] not in host.spans:
            return False
        anchor = host.anchor
    return False


class TraceGrouper:
    """Collects spans as they arrive and hands out whole request groups once they are complete.

    A group is ready when every workflow its request announced has arrived (and a workflow's
    request, for a workflow), and nothing new came for ``settle`` seconds. Spans of another
    service arrive on that service's own export schedule (the SDK's batch delay is 5 s), so a
    trace still waiting on one -- its root span (no parent at all) has not arrived, or a client
    span has no child yet (:attr:`TraceView.awaits_callee`) -- is held for ``root_wait`` seconds
    of quiet instead. After ``max_wait`` seconds a group is handed out as it is.
    Times are whatever clock the caller passes (``time.monotonic()``). Not thread-safe.
    """

    def __init__(
        self,
        settle: float = 0.5,
        max_wait: float = 30.0,
        root_wait: float = 6.0,
        max_spans: int = 100_000,
    ) -> None:
        self.settle = settle
        self.max_wait = max_wait
        self.root_wait = min(root_wait, max_wait)
        self.max_spans = max_spans
        self._spans: OrderedDict[tuple[str, str], SpanLike] = OrderedDict()
        self._first_seen: dict[str, float] = {}
        self._last_seen: dict[str, float] = {}

    def add(self, spans: Iterable[SpanLike], now: float) -> None:
        """Take newly arrived spans (spans beyond ``max_spans`` push the oldest ones out)."""
        for span in spans:
            self._spans[(span.trace_id, span.span_id)] = span
            self._first_seen.setdefault(span.trace_id, now)
            self._last_seen[span.trace_id] = now
        while len(self._spans) > self.max_spans:
            self._spans.popitem(last=False)

    @property
    def pending(self) -> int:
        """Number of spans held back."""
        return len(self._spans)

    def _ready(self, group: TraceGroup, now: float) -> bool:
        traces = [view.trace_id for view in group.traces]
        first = min(self._first_seen.get(t, now) for t in traces)
        if now - first >= self.max_wait:
            return True
        if group.missing:
            return False
        quiet = now - max(self._last_seen.get(t, now) for t in traces)
        if not all(view.has_root and not view.awaits_callee for view in group.traces):
            return quiet >= max(self.root_wait, self.settle)
        return quiet >= self.settle

    def pop_ready(self, now: float, *, everything: bool = False) -> list[TraceGroup]:
        """Remove and return the groups that are complete (all of them with ``everything``)."""
        if not self._spans:
            return []
        ready = [
            group
            for group in build_groups(self._spans.values())
            if everything or self._ready(group, now)
        ]
        for group in ready:
            for view in group.traces:
                for span_id in view.spans:
                    self._spans.pop((view.trace_id, span_id), None)
        live = {trace_id for trace_id, _ in self._spans}
        for seen in (self._first_seen, self._last_seen):
            for trace_id in [t for t in seen if t not in live]:
                del seen[trace_id]
        return ready


# -- rendering ----------------------------------------------------------------------------------


def make_console(file: IO[str] | None = None, *, color: bool | None = None) -> Console:
    """A ``rich`` console for trees: colour only on a terminal and without ``NO_COLOR``.

    Output that is not a terminal gets plain text, wide enough that ids are never wrapped.
    """
    from rich.console import Console

    stream = sys.stdout if file is None else file
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    if color is None:
        color = is_tty and not os.environ.get("NO_COLOR")
    return Console(
        file=stream,
        no_color=not color,
        color_system="auto" if color else None,
        force_terminal=is_tty,
        highlight=False,
        emoji=False,
        width=None if is_tty else _PIPE_WIDTH,
        soft_wrap=False,
    )


def format_duration(nanos: int) -> str:
    """``1234567`` ns -> ``"1.2 ms"``; seconds from one second, ``us`` below 0.1 ms (ASCII only)."""
    if nanos < 0:
        return "?"
    if nanos >= 1_000_000_000:
        return f"{nanos / 1e9:.2f} s"
    if nanos >= 100_000:
        return f"{nanos / 1e6:.1f} ms"
    return f"{nanos / 1e3:.0f} us"


def _duration(span: SpanLike) -> str:
    return format_duration(span.end_time_unix_nano - span.start_time_unix_nano)


def _group_duration(view: TraceView) -> str:
    spans = view.roots or list(view.spans.values())
    start = min(s.start_time_unix_nano for s in spans)
    end = max(s.end_time_unix_nano for s in spans)
    return format_duration(end - start)


def _status(span: SpanLike) -> Text:
    """``200 ok``, ``500 ERROR (message)``, ``ok``: the HTTP status if any, then OTel's."""
    from rich.text import Text

    status = Text()
    for key in _HTTP_STATUS_KEYS:
        value = span.attributes.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            status.append(f"{value} ", style="red" if value >= 500 else "green")
            break
    if span.status_code == "ERROR":
        status.append("ERROR", style="bold red")
        if span.status_message:
            status.append(f" ({_clean(span.status_message, 80)})", style="red")
    else:
        status.append("ok", style="green")
    return status


def _clean(value: object, limit: int = 120) -> str:
    """Printable, one line, bounded: span data comes from the network."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _client_path(span: SpanLike) -> str:
    """The URL path of an HTTP client span whose name is its method alone, else ``""``."""
    if span.kind == "CLIENT" and " " not in span.name:
        for key in _URL_KEYS:
            url = span.attributes.get(key)
            if isinstance(url, str):
                try:
                    return urlsplit(url).path
                except ValueError:
                    return ""
    return ""


def _display_name(span: SpanLike) -> str:
    """A request's summary: the span name, with the URL's path after a bare HTTP method."""
    path = _client_path(span)
    return f"{span.name} {path}" if path else span.name


def _span_label(span: SpanLike) -> Text:
    from rich.text import Text

    # The span's own name, as Jaeger and every other back end shows it.
    label = Text(overflow="fold")
    label.append(_clean(span.name), style="bold")
    if span.kind not in ("INTERNAL", "UNSPECIFIED", ""):
        label.append(f"  {span.kind.lower()}", style="cyan")
    path = _client_path(span)
    if path:
        label.append(f"  {_clean(path)}")
    label.append(f"  {_duration(span)}", style="yellow")
    if span.status_code == "ERROR":
        label.append("  ")
        label.append_text(_status(span))
    return label


def _workflow_label(view: TraceView, root: SpanLike) -> Text:
    from rich.text import Text

    label = Text(overflow="fold")
    label.append(_clean(root.name), style="bold magenta")
    label.append("  trace_id=", style="dim")
    label.append(view.trace_id, style="magenta")
    label.append(f"  {_duration(root)}", style="yellow")
    label.append("  ")
    label.append_text(_status(root))
    return label


def _add_span(tree: Tree, view: TraceView, span: SpanLike, depth: int) -> None:
    node = tree.add(_span_label(span))
    _add_children(node, view, span.span_id, depth + 1)


def _add_children(node: Tree, view: TraceView, span_id: str, depth: int) -> None:
    if depth > 200:  # a hostile parent chain cannot exhaust the stack
        node.add("...")
        return
    items: list[tuple[int, str, SpanLike | TraceView]] = [
        (child.start_time_unix_nano, child.span_id, child)
        for child in view.children.get(span_id, [])
    ]
    items += [(nested.start, nested.trace_id, nested) for nested in view.nested.get(span_id, [])]
    for _, _, item in sorted(items, key=lambda it: (it[0], it[1])):
        if isinstance(item, TraceView):
            _add_workflow(node, item, depth)
        else:
            _add_span(node, view, item, depth)


def _add_workflow(node: Tree, view: TraceView, depth: int) -> None:
    for root in view.roots:
        if WORKFLOW_NAME_ATTRIBUTE in root.attributes:
            child = node.add(_workflow_label(view, root), guide_style="magenta")
            _add_children(child, view, root.span_id, depth + 1)
        else:
            _add_span(node, view, root, depth)


def _group_tree(group: TraceGroup) -> Tree:
    from rich.text import Text
    from rich.tree import Tree

    top = group.top
    roots = top.roots
    first = roots[0] if roots else next(iter(top.spans.values()))
    header = Text(overflow="fold")
    if top.is_workflow:
        header.append("workflow ", style="bold magenta")
        name = first.attributes.get(WORKFLOW_NAME_ATTRIBUTE, first.name)
        header.append(_clean(name), style="bold")
        header.append("  trace_id=", style="dim")
        header.append(top.trace_id, style="magenta")
    else:
        header.append("request ", style="bold blue")
        header.append(_clean(group.request_id or "(no request_id)"), style="bold")
        header.append(f"  {_clean(_display_name(first))}")
    header.append("  ")
    header.append_text(_status(first))
    header.append(f"  {_group_duration(top)}", style="yellow")
    count, traces = group.span_count, len(group.traces)
    header.append(f"  {count} span{'' if count == 1 else 's'}", style="dim")
    if traces > 1:
        header.append(f" in {traces} traces", style="dim")
    service = first.resource.get("service.name")
    if service:
        header.append(f"  service={_clean(service, 60)}", style="dim")
    if top.is_workflow:
        if group.request_id:
            header.append(f"  request_id={_clean(group.request_id)}", style="dim")
    else:
        header.append(f"  trace={top.trace_id}", style="dim")
    tree = Tree(header, guide_style="blue")
    for root in roots:
        if top.is_workflow and WORKFLOW_NAME_ATTRIBUTE in root.attributes:
            _add_children(tree, top, root.span_id, 1)
        else:
            _add_span(tree, top, root, 1)
    for trace_id in group.missing:
        tree.add(
            Text(f"(linked trace {trace_id} not received)", style="dim red", overflow="fold"),
        )
    return tree


def render_groups(groups: Iterable[TraceGroup], console: Console) -> None:
    """Print each group as a tree, a blank line between groups."""
    for index, group in enumerate(groups):
        if index:
            console.print()
        console.print(_group_tree(group))


def render_text(spans: Iterable[SpanLike], *, color: bool = False, width: int = _PIPE_WIDTH) -> str:
    """The trees of ``spans`` as a string (for tests, logs and files)."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        no_color=not color,
        color_system="standard" if color else None,
        force_terminal=color,
        highlight=False,
        emoji=False,
    )
    render_groups(build_groups(spans), console)
    return buffer.getvalue()
