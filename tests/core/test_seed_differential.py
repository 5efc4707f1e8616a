"""Differential tests: the SAME cases run against the seed module itself and against kilostar_otel.

The seed (``context_seed.py``, Apache-2.0) lives beside the repository in ``shared/seed/``; it is
copied into a temporary directory at test time, header included, and imported from there. Each case
is a function of the module under test that returns what it observed (values, or the type of the
exception a step raised). Both modules must observe the same, except for the deliberate extensions
listed in the table of ``docs/migration.md``: for those the test asserts that the seed really
differs and that kilostar_otel gives exactly the documented result.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry import baggage, context
from opentelemetry.sdk.trace import TracerProvider

import kilostar_otel

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT.parent / "shared" / "seed" / "context_seed.py"
MIGRATION_DOC = ROOT / "docs" / "migration.md"

# Spans in these cases come from a real SDK provider of their own (not the session's global one).
TRACER = TracerProvider().get_tracer("seed-differential")

ANY_STRINGS = {
    "unicode": "请求-ü-🚀",
    "spaces": "req with spaces",
    "hash": "req#frag;x=1,y",
    "long": "r" * 300,
    "newline": "a\r\nb",
    "quote": 'say "hi"',
}


# --- running one case --------------------------------------------------------------------------


@dataclass(frozen=True)
class Raised:
    """A step raised an exception of this type (the outcome compared instead of a value)."""

    type: type[BaseException]


def attempt(step: Callable[[], Any]) -> Any:
    """Run ``step`` and return its value, or ``Raised(type)`` when it raises."""
    try:
        return step()
    except Exception as exc:
        return Raised(type(exc))


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Any], Any]
    #: Label of the row in docs/migration.md when kilostar_otel differs on purpose.
    extension: str | None = None
    #: What kilostar_otel observes for an extension (the seed must observe something else).
    ours: Any = None


CASES: list[Case] = []


def case(
    name: str, *, extension: str | None = None, ours: Any = None
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    def register(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        CASES.append(Case(name, fn, extension, ours))
        return fn

    return register


def run_case(body: Callable[[Any], Any], module: Any) -> Any:
    """Run a case in a fresh, empty context so nothing leaks between cases or modules."""
    return contextvars.Context().run(attempt, lambda: body(module))


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a new thread (which starts with an empty context) and return its outcome."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(attempt(fn)))
    worker.start()
    worker.join()
    return result[0]


def ids(m: Any) -> tuple[Any, Any]:
    return m.get_request_id(), m.get_trace_id()


# --- reading and binding -----------------------------------------------------------------------


@case("unbound ids read as empty strings")
def _(m: Any) -> Any:
    return ids(m)


@case("new_request_id has the seed's format")
def _(m: Any) -> Any:
    return [
        bool(re.fullmatch(r"req-[0-9a-f]{32}", m.new_request_id())),
        bool(re.fullmatch(r"job-[0-9a-f]{32}", m.new_request_id(prefix="job"))),
        bool(re.fullmatch(r"-[0-9a-f]{32}", m.new_request_id(""))),
        m.new_request_id() != m.new_request_id(),
    ]


@case("bind and reset a request id")
def _(m: Any) -> Any:
    token = m.bind_request_id("req-a")
    seen = [ids(m)]
    m.reset_request_id(token)
    return [*seen, ids(m)]


@case("bind and reset a trace id")
def _(m: Any) -> Any:
    token = m.bind_trace_id("t-1")
    seen = [ids(m)]
    m.reset_trace_id(token)
    return [*seen, ids(m)]


@case("nested binds reset innermost first")
def _(m: Any) -> Any:
    outer = m.bind_request_id("req-outer")
    inner = m.bind_request_id("req-inner")
    seen = [ids(m)]
    m.reset_request_id(inner)
    seen.append(ids(m))
    m.reset_request_id(outer)
    return [*seen, ids(m)]


@case("nested binds of one id reset outermost first")
def _(m: Any) -> Any:
    outer = m.bind_request_id("req-outer")
    inner = m.bind_request_id("req-inner")
    m.reset_request_id(outer)
    seen = [ids(m)]
    m.reset_request_id(inner)
    return [*seen, ids(m)]


@case("request and trace ids reset in any order")
def _(m: Any) -> Any:
    request_token = m.bind_request_id("req-a")
    trace_token = m.bind_trace_id("t-1")
    m.reset_request_id(request_token)
    seen = [ids(m)]
    m.reset_trace_id(trace_token)
    return [*seen, ids(m)]


@case("trace bound first, request reset last")
def _(m: Any) -> Any:
    trace_token = m.bind_trace_id("t-1")
    request_token = m.bind_request_id("req-a")
    m.reset_trace_id(trace_token)
    seen = [ids(m)]
    m.reset_request_id(request_token)
    return [*seen, ids(m)]


@case("a token is used once")
def _(m: Any) -> Any:
    token = m.bind_request_id("req-once")
    m.reset_request_id(token)
    return [attempt(lambda: m.reset_request_id(token)), ids(m)]


@case("reset_request_id given a trace token")
def _(m: Any) -> Any:
    trace_token = m.bind_trace_id("t-1")
    return [attempt(lambda: m.reset_request_id(trace_token)), ids(m)]


@case("reset_trace_id given a request token")
def _(m: Any) -> Any:
    request_token = m.bind_request_id("req-a")
    return [attempt(lambda: m.reset_trace_id(request_token)), ids(m)]


@case("reset given something that is not a token")
def _(m: Any) -> Any:
    return [attempt(lambda: m.reset_request_id(None)), attempt(lambda: m.reset_trace_id("t"))]


@case("reset from another thread")
def _(m: Any) -> Any:
    token = m.bind_request_id("req-thread")
    elsewhere = in_thread(lambda: m.reset_request_id(token))
    seen = [elsewhere, ids(m)]
    m.reset_request_id(token)
    return [*seen, ids(m)]


@case("reset from another asyncio task")
def _(m: Any) -> Any:
    async def main() -> Any:
        token = m.bind_request_id("req-task")

        async def reset_it() -> Any:
            return attempt(lambda: m.reset_request_id(token))

        seen = [await asyncio.create_task(reset_it()), ids(m)]
        m.reset_request_id(token)
        return [*seen, ids(m)]

    return asyncio.run(main())


@case("a new thread does not see the caller's ids")
def _(m: Any) -> Any:
    with m.request_id_scope("req-main"):
        return in_thread(lambda: ids(m))


@case("copy_context().run sees the ids")
def _(m: Any) -> Any:
    with m.request_id_scope("req-copy"), m.trace_id_scope("t-copy"):
        copied = contextvars.copy_context()
    return [ids(m), copied.run(lambda: ids(m))]


# --- tokens where code touches them --------------------------------------------------------------


@case("the token is a contextvars.Token")
def _(m: Any) -> Any:
    return [
        isinstance(m.bind_request_id("req-a"), contextvars.Token),
        isinstance(m.bind_trace_id("t"), contextvars.Token),
    ]


@case("token.var.reset(token) restores the previous id")
def _(m: Any) -> Any:
    outer = m.bind_request_id("req-outer")
    token = m.bind_request_id("req-inner")
    token.var.reset(token)
    seen = [ids(m)]
    outer.var.reset(outer)
    trace_token = m.bind_trace_id("t")
    trace_token.var.reset(trace_token)
    return [*seen, ids(m)]


@case("token.old_value is the previous id")
def _(m: Any) -> Any:
    first = m.bind_request_id("req-outer")
    second = m.bind_request_id("req-inner")
    return [first.old_value is contextvars.Token.MISSING, second.old_value]


@case("token.var.get() reads the bound id")
def _(m: Any) -> Any:
    return m.bind_request_id("req-a").var.get()


# --- scopes ------------------------------------------------------------------------------------


@case("scopes yield the id and restore on exit")
def _(m: Any) -> Any:
    with m.request_id_scope("req-1") as rid, m.trace_id_scope("t-1") as tid:
        inside = [rid, tid, ids(m)]
    return [inside, ids(m)]


@case("nested scopes")
def _(m: Any) -> Any:
    seen = []
    with m.request_id_scope("req-outer"):
        with m.request_id_scope("req-inner"), m.trace_id_scope("t-inner"):
            seen.append(ids(m))
        seen.append(ids(m))
    return [*seen, ids(m)]


@case("a scope restores on an exception and lets it through")
def _(m: Any) -> Any:
    def boom() -> None:
        with m.request_id_scope("req-err"):
            raise KeyError("boom")

    return [attempt(boom), ids(m)]


@case("a bind leaked inside a scope")
def _(m: Any) -> Any:
    with m.request_id_scope("req-scope"):
        m.bind_trace_id("t-leaked")
        m.bind_request_id("req-leaked")
        inside = ids(m)
    return [inside, ids(m)]


@case("request_id_scope as a decorator")
def _(m: Any) -> Any:
    @m.request_id_scope("req-deco")
    def handler(n: int) -> Any:
        return (n, ids(m))

    return [handler(1), ids(m), handler(2), ids(m)]


@case("trace_id_scope as a decorator")
def _(m: Any) -> Any:
    @m.trace_id_scope("t-deco")
    def handler() -> Any:
        return ids(m)

    return [handler(), ids(m), handler()]


@case("apply_snapshot as a decorator")
def _(m: Any) -> Any:
    @m.apply_snapshot({"request_id": "req-snap", "trace_id": "t-snap"})
    def handler() -> Any:
        return ids(m)

    return [handler(), ids(m), handler()]


@case("a decorated function that calls itself")
def _(m: Any) -> Any:
    @m.request_id_scope("req-rec")
    def countdown(n: int) -> Any:
        return [ids(m)] if n == 0 else [ids(m), *countdown(n - 1)]

    return [countdown(2), ids(m)]


# --- OpenTelemetry spans interleaved with binds and resets ---------------------------------------


@case("bind, open a span, reset inside it, close it: the id stays reset")
def _(m: Any) -> Any:
    token = m.bind_request_id("req-a")
    with TRACER.start_as_current_span("inside"):
        m.reset_request_id(token)
        inside = ids(m)
    return [inside, ids(m)]


@case("bind a trace id, open a span, reset inside it, close it")
def _(m: Any) -> Any:
    token = m.bind_trace_id("t-a")
    with TRACER.start_as_current_span("inside"):
        m.reset_trace_id(token)
        inside = ids(m)
    return [inside, ids(m)]


@case("bind inside a span, close the span: the id stays bound until its reset")
def _(m: Any) -> Any:
    with TRACER.start_as_current_span("outer"):
        token = m.bind_request_id("req-a")
    seen = [ids(m)]
    m.reset_request_id(token)
    return [*seen, ids(m)]


@case("bind a trace id inside a span, close the span")
def _(m: Any) -> Any:
    with TRACER.start_as_current_span("outer"):
        token = m.bind_trace_id("t-a")
    seen = [ids(m)]
    m.reset_trace_id(token)
    return [*seen, ids(m)]


@case("bind, attach other baggage, reset, detach: the id stays reset")
def _(m: Any) -> Any:
    token = m.bind_request_id("req-a")
    otel_token = context.attach(baggage.set_baggage("tenant", "acme"))
    m.reset_request_id(token)
    inside = ids(m)
    context.detach(otel_token)
    return [inside, ids(m)]


@case("spans inside a scope and scopes inside a span")
def _(m: Any) -> Any:
    seen = []
    with m.request_id_scope("req-a"), TRACER.start_as_current_span("s1"):
        seen.append(ids(m))
        with m.trace_id_scope("t-1"):
            seen.append(ids(m))
        seen.append(ids(m))
    return [*seen, ids(m)]


# --- asyncio -----------------------------------------------------------------------------------


@case("asyncio tasks inherit the ids and never leak them back")
def _(m: Any) -> Any:
    async def child() -> Any:
        seen = ids(m)
        m.bind_request_id("req-child")
        m.bind_trace_id("t-child")
        return seen

    async def main() -> Any:
        with m.request_id_scope("req-parent"):
            seen = await asyncio.create_task(child())
            return [seen, ids(m)]

    return asyncio.run(main())


@case("concurrent tasks keep their own ids")
def _(m: Any) -> Any:
    async def handler(n: int) -> bool:
        with m.request_id_scope(f"req-{n}"):
            await asyncio.sleep(0)
            return bool(m.get_request_id() == f"req-{n}")

    async def main() -> Any:
        return await asyncio.gather(*(handler(n) for n in range(20)))

    return asyncio.run(main())


# --- snapshots ---------------------------------------------------------------------------------


@case("snapshot with nothing bound")
def _(m: Any) -> Any:
    return m.snapshot()


@case("snapshot's seed keys")
def _(m: Any) -> Any:
    with m.request_id_scope("req-s"), m.trace_id_scope("t-s"):
        snap = m.snapshot()
    return {key: snap[key] for key in ("request_id", "trace_id")}


@case(
    "snapshot with ids bound",
    extension="`snapshot()` adds W3C keys",
    ours={"request_id": "req-s", "trace_id": "t-s", "baggage": "kilostar.request_id=req-s"},
)
def _(m: Any) -> Any:
    with m.request_id_scope("req-s"), m.trace_id_scope("t-s"):
        return m.snapshot()


@case("apply_snapshot(None) and ({}) change nothing")
def _(m: Any) -> Any:
    seen = []
    with m.request_id_scope("req-keep"), m.trace_id_scope("t-keep"):
        for empty in (None, {}):
            with m.apply_snapshot(empty):
                seen.append(ids(m))
    return [*seen, ids(m)]


@case("apply_snapshot binds both ids and restores on exit")
def _(m: Any) -> Any:
    with m.request_id_scope("req-outer"):
        with m.apply_snapshot({"request_id": "req-snap", "trace_id": "t-snap"}):
            inside = ids(m)
        after = ids(m)
    return [inside, after, ids(m)]


@case("apply_snapshot of a partial snapshot keeps the other id")
def _(m: Any) -> Any:
    seen = []
    with m.request_id_scope("req-outer"), m.trace_id_scope("t-outer"):
        for partial in ({"request_id": "req-p"}, {"trace_id": "t-p"}, {"request_id": ""}):
            with m.apply_snapshot(partial):
                seen.append(ids(m))
    return seen


@case("apply_snapshot ignores extra keys")
def _(m: Any) -> Any:
    with m.apply_snapshot({"request_id": "req-x", "trace_id": "t-x", "tenant": "acme", "n": 1}):
        return ids(m)


@case("a bind leaked inside apply_snapshot")
def _(m: Any) -> Any:
    with m.apply_snapshot({"request_id": "req-snap", "trace_id": "t-snap"}):
        m.bind_request_id("req-leaked")
    return ids(m)


@case("apply_snapshot of falsy garbage changes nothing")
def _(m: Any) -> Any:
    seen = []
    for garbage in ("", 0, [], False):
        with m.apply_snapshot(garbage):
            seen.append(ids(m))
    return seen


@case("apply_snapshot with None and empty values changes nothing")
def _(m: Any) -> Any:
    with m.apply_snapshot({"request_id": None, "trace_id": ""}):
        return ids(m)


def _apply_garbage(m: Any) -> Any:
    def enter(garbage: object) -> Any:
        with m.apply_snapshot(garbage):
            return ids(m)

    return [enter(g) for g in ("garbage", 42, ["request_id"], object())]


case(
    "apply_snapshot of a non-mapping",
    extension="malformed snapshots are ignored",
    ours=[("", "")] * 4,
)(_apply_garbage)


@case(
    "apply_snapshot with non-str ids",
    extension="ids are always `str`",
    ours=[("42", "['t']"), ("", "")],
)
def _(m: Any) -> Any:
    with m.apply_snapshot({"request_id": 42, "trace_id": ["t"]}):
        inside = ids(m)
    return [inside, ids(m)]


# --- non-str values ----------------------------------------------------------------------------


@case("bind non-str values", extension="ids are always `str`", ours=[("42", ""), ("", "")])
def _(m: Any) -> Any:
    request_token = m.bind_request_id(42)
    trace_token = m.bind_trace_id(None)
    seen = [ids(m)]
    m.reset_trace_id(trace_token)
    m.reset_request_id(request_token)
    return [*seen, ids(m)]


@case(
    "scopes with non-str values",
    extension="ids are always `str`",
    ours=[("7", "7.5", ("7", "7.5")), ("", "")],
)
def _(m: Any) -> Any:
    with m.request_id_scope(7) as rid, m.trace_id_scope(7.5) as tid:
        inside = (rid, tid, ids(m))
    return [inside, ids(m)]


@case("snapshot of non-str ids", extension="ids are always `str`", ours={"request_id": "42"})
def _(m: Any) -> Any:
    with m.request_id_scope(42):
        return {"request_id": m.snapshot()["request_id"]}


# --- ids of any string -------------------------------------------------------------------------


@pytest.fixture(params=list(ANY_STRINGS), ids=list(ANY_STRINGS))
def any_string(request: pytest.FixtureRequest) -> str:
    return ANY_STRINGS[request.param]


def _any_string_cases(value: str) -> list[Case]:
    def bind(m: Any) -> Any:
        request_token, trace_token = m.bind_request_id(value), m.bind_trace_id(value)
        seen = [ids(m)]
        m.reset_trace_id(trace_token)
        m.reset_request_id(request_token)
        return [*seen, ids(m)]

    def scope(m: Any) -> Any:
        with m.request_id_scope(value) as rid, m.trace_id_scope(value) as tid:
            return [rid, tid, ids(m)]

    def round_trip(m: Any) -> Any:
        with m.request_id_scope(value), m.trace_id_scope(value):
            snap = m.snapshot()
        with m.apply_snapshot(snap):
            inside = ids(m)
        return [snap["request_id"], snap["trace_id"], inside]

    def apply_seed_snapshot(m: Any) -> Any:
        with m.apply_snapshot({"request_id": value, "trace_id": value}):
            return ids(m)

    return [
        Case("bind", bind),
        Case("scope", scope),
        Case("snapshot round trip", round_trip),
        Case("apply a seed snapshot", apply_seed_snapshot),
    ]


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The seed module, copied from ``../shared/seed/`` into a temp dir and imported from there."""
    if not SEED.is_file():
        pytest.fail(
            f"the seed module is missing: expected {SEED} (the repository's parent directory "
            "holds shared/seed/context_seed.py); the differential tests need the seed itself",
            pytrace=False,
        )
    copy = tmp_path_factory.mktemp("seed") / "context_seed.py"
    shutil.copyfile(SEED, copy)
    assert "Licensed under the Apache License, Version 2.0" in copy.read_text(encoding="utf-8")
    spec = importlib.util.spec_from_file_location("kilostar_context_seed_under_test", copy)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented_extensions() -> dict[str, str]:
    """The rows of the differences table in docs/migration.md: label -> reason."""
    rows = {}
    for line in MIGRATION_DOC.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3 and not set(cells[0]) <= {"-", " "}:
            rows[cells[0]] = cells[-1]
    rows.pop("Difference", None)  # the header row
    return rows


def assert_same_or_documented(c: Case, seed_module: ModuleType) -> None:
    theirs = run_case(c.run, seed_module)
    ours = run_case(c.run, kilostar_otel)
    if c.extension is None:
        assert ours == theirs, f"{c.name}: the seed gives {theirs!r}, kilostar_otel {ours!r}"
    else:
        assert c.extension in documented_extensions(), f"{c.extension!r} not in migration.md"
        assert theirs != c.ours, f"{c.name}: the seed no longer differs ({theirs!r})"
        assert ours == c.ours, f"{c.name}: documented {c.ours!r}, kilostar_otel gives {ours!r}"


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_same_outcome_as_the_seed(c: Case, seed: ModuleType) -> None:
    assert_same_or_documented(c, seed)


@pytest.mark.parametrize("kind", ["bind", "scope", "snapshot round trip", "apply a seed snapshot"])
def test_ids_of_any_string_behave_as_in_the_seed(
    kind: str, any_string: str, seed: ModuleType
) -> None:
    (c,) = [c for c in _any_string_cases(any_string) if c.name == kind]
    assert_same_or_documented(c, seed)


def test_every_documented_difference_is_exercised() -> None:
    used = {c.extension for c in CASES if c.extension is not None}
    assert set(documented_extensions()) == used


def test_the_seed_api_is_one_import_away(seed: ModuleType) -> None:
    public = {name for name in vars(seed) if not name.startswith("_")}
    seed_api = {name for name in public if callable(getattr(seed, name))} - {
        "contextmanager",
        "ContextVar",
        "Token",
        "Iterator",
        "Optional",
    }
    assert seed_api <= set(kilostar_otel.__all__)
