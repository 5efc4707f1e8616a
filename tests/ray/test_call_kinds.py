"""The four kinds of callable through both users of the call engine, in this process.

``workflow()`` as a decorator and the Ray callee (a remote function's and an actor method's
wrapper) wrap plain functions, coroutines, generators and async generators the same way: the
run's span is current only while the body runs, errors are recorded, early closes end the span.
The same calls across a real cluster are in test_calls.py.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from ray import cloudpickle

from kilostar_otel import get_request_id, request_id_scope, snapshot, workflow
from kilostar_otel.integrations.ray._callee import traced_callee
from tests.conftest import Spans

pytestmark = pytest.mark.ray


@dataclass
class User:
    """One user of the engine: how it wraps, what a call passes, how its span is named."""

    name: str
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
    span_name: Callable[[Callable[..., Any]], str]
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: The request id the body sees (the Ray callee's comes from the caller's snapshot).
    request_id: str = ""


def _snapshot() -> dict[str, str]:
    with request_id_scope("req-kinds"):
        return snapshot()


USERS = [
    User("workflow", lambda fn: workflow()(fn), lambda fn: f"invoke_workflow {fn.__qualname__}"),
    User(
        "ray-task",
        traced_callee,
        lambda fn: f"ray.task {fn.__qualname__}",
        {"_kilostar_ctx": _snapshot()},
        "req-kinds",
    ),
    User(
        "ray-actor-method",
        lambda fn: traced_callee(fn, class_name="Actor"),
        lambda fn: f"ray.actor Actor.{fn.__name__}",
        {"_kilostar_ctx": _snapshot()},
        "req-kinds",
    ),
]


@pytest.fixture(params=USERS, ids=[u.name for u in USERS])
def user(request: pytest.FixtureRequest) -> User:
    return request.param  # type: ignore[no-any-return]


def here() -> tuple[int, str]:
    """The current span id and request id."""
    return trace.get_current_span().get_span_context().span_id, get_request_id()


def _the_run(spans: Spans, user: User, fn: Callable[..., Any]) -> ReadableSpan:
    span = spans.named(user.span_name(fn))
    assert span.end_time is not None
    return span


def plain() -> tuple[int, str]:
    return here()


async def coroutine() -> tuple[int, str]:
    await asyncio.sleep(0)
    return here()


def generator(n: int) -> Iterator[tuple[int, str]]:
    for _ in range(n):
        yield here()


async def async_generator(n: int) -> AsyncIterator[tuple[int, str]]:
    for _ in range(n):
        await asyncio.sleep(0)
        yield here()


def failing_plain() -> None:
    raise ValueError("plain failed")


async def failing_coroutine() -> None:
    await asyncio.sleep(0)
    raise ValueError("coroutine failed")


def failing_generator() -> Iterator[int]:
    yield 1
    raise ValueError("generator failed")


async def failing_async_generator() -> AsyncIterator[int]:
    yield 1
    raise ValueError("async generator failed")


def endless() -> Iterator[int]:
    n = 0
    while True:
        yield n
        n += 1


async def async_endless() -> AsyncIterator[int]:
    n = 0
    while True:
        await asyncio.sleep(0)
        yield n
        n += 1


def _inside(span: ReadableSpan, user: User) -> tuple[int, str]:
    return span.context.span_id, user.request_id


def test_plain(user: User, spans: Spans, tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("consumer"):
        outside = here()
        seen = user.wrap(plain)(**user.kwargs)
        assert here() == outside
    assert seen == _inside(_the_run(spans, user, plain), user)


async def test_coroutine(user: User, spans: Spans, tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("consumer"):
        outside = here()
        seen = await user.wrap(coroutine)(**user.kwargs)
        assert here() == outside
    assert seen == _inside(_the_run(spans, user, coroutine), user)


def test_generator_is_current_only_while_it_runs(
    user: User, spans: Spans, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("consumer"):
        outside = here()
        seen = []
        for item in user.wrap(generator)(3, **user.kwargs):
            assert here() == outside  # between items: the consumer's span and ids
            seen.append(item)
    assert seen == [_inside(_the_run(spans, user, generator), user)] * 3


async def test_async_generator_is_current_only_while_it_runs(
    user: User, spans: Spans, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("consumer"):
        outside = here()
        seen = []
        async for item in user.wrap(async_generator)(3, **user.kwargs):
            assert here() == outside
            seen.append(item)
    assert seen == [_inside(_the_run(spans, user, async_generator), user)] * 3


def _assert_failed(span: ReadableSpan) -> None:
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is not None
    assert span.status.description.startswith("ValueError")
    assert [e.name for e in span.events if e.name == "exception"] == ["exception"]


async def test_errors_are_recorded_for_every_kind(user: User, spans: Spans) -> None:
    with pytest.raises(ValueError, match="plain failed"):
        user.wrap(failing_plain)(**user.kwargs)
    with pytest.raises(ValueError, match="coroutine failed"):
        await user.wrap(failing_coroutine)(**user.kwargs)
    with pytest.raises(ValueError, match="generator failed"):
        list(user.wrap(failing_generator)(**user.kwargs))
    with pytest.raises(ValueError, match="async generator failed"):
        async for _ in user.wrap(failing_async_generator)(**user.kwargs):
            pass
    for fn in (failing_plain, failing_coroutine, failing_generator, failing_async_generator):
        _assert_failed(_the_run(spans, user, fn))
    assert here() == (0, "")


@pytest.mark.parametrize("how", ["close", "break"])
def test_a_generator_stopped_early_ends_its_span(user: User, spans: Spans, how: str) -> None:
    gen = user.wrap(endless)(**user.kwargs)
    if how == "close":
        next(gen)
        gen.close()
    else:
        for n in gen:
            if n == 2:
                break
        del gen
    assert _the_run(spans, user, endless).status.status_code is StatusCode.UNSET
    assert here() == (0, "")


@pytest.mark.parametrize("how", ["aclose", "break"])
async def test_an_async_generator_stopped_early_ends_its_span(
    user: User, spans: Spans, how: str
) -> None:
    agen = user.wrap(async_endless)(**user.kwargs)
    if how == "aclose":
        await agen.__anext__()
        await agen.aclose()
    else:
        async with aclosing(agen) as stream:
            async for n in stream:
                if n == 2:
                    break
    assert _the_run(spans, user, async_endless).status.status_code is StatusCode.UNSET
    assert here() == (0, "")


def _shipped(fn: Callable[..., Any]) -> Any:
    """``fn`` after a trip through Ray's serializer (how Ray sends functions to workers)."""
    return pickle.loads(cloudpickle.dumps(fn))


def test_wrapped_callables_survive_rays_serializer(user: User, spans: Spans) -> None:
    shipped = _shipped(user.wrap(plain))
    assert shipped(**user.kwargs)[1] == user.request_id
    assert spans.named(user.span_name(plain)).end_time is not None
