"""The call-wrapping engine's rules, for each of the four kinds of callable.

A recording run stands for a user (``workflow()``, the Ray callee): it notes the context that is
current when it finishes and what it finished with. The spans those users make are checked in
tests/ray/test_call_kinds.py.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from typing import Any

import pytest
from opentelemetry.context import Context, create_key, get_current, get_value

from kilostar_otel._calls import wrap

_KEY = create_key("kilostar-test-run")


def _current() -> object:
    return get_value(_KEY)


class Recorder:
    """A run whose context carries a marker; it records every finish."""

    def __init__(self, marker: str) -> None:
        self.context = Context({_KEY: marker})
        self.finished: list[tuple[BaseException | None, object]] = []

    def finish(self, exc: BaseException | None) -> None:
        self.finished.append((exc, _current()))

    async def finish_async(self, exc: BaseException | None) -> None:
        self.finished.append((exc, _current()))


class Starts:
    """The ``start`` of :func:`wrap`: one recorder per call, keyword ``tag`` taken out."""

    def __init__(self) -> None:
        self.runs: list[Recorder] = []

    def __call__(self, kwargs: dict[str, Any]) -> Recorder:
        run = Recorder(kwargs.pop("tag", "run"))
        self.runs.append(run)
        return run

    @property
    def run(self) -> Recorder:
        assert len(self.runs) == 1
        return self.runs[0]


def _outcome(run: Recorder) -> tuple[str | None, object]:
    """What the run finished with (exception type name) and the context current at that time."""
    assert len(run.finished) == 1, run.finished  # exactly once
    exc, current = run.finished[0]
    return (type(exc).__name__ if exc is not None else None), current


def plain(x: int) -> object:
    return (x, _current())


async def coroutine(x: int) -> object:
    await asyncio.sleep(0)
    return (x, _current())


def generator(n: int) -> Iterator[object]:
    for _ in range(n):
        yield _current()
    return "done"


async def async_generator(n: int) -> AsyncIterator[object]:
    for _ in range(n):
        await asyncio.sleep(0)
        yield _current()


@pytest.mark.parametrize("fn", [plain, coroutine, generator, async_generator])
def test_the_wrapper_is_of_the_same_kind_and_keeps_the_metadata(fn: Callable[..., Any]) -> None:
    wrapped = wrap(fn, Starts())
    for check in (
        inspect.isasyncgenfunction,
        inspect.isgeneratorfunction,
        inspect.iscoroutinefunction,
    ):
        assert check(wrapped) == check(fn)
    assert wrapped.__name__ == fn.__name__
    assert wrapped.__wrapped__ is fn  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(fn)


def test_plain_runs_attached_and_finishes_after_detaching() -> None:
    starts = Starts()
    token_context = get_current()
    assert wrap(plain, starts)(1, tag="a") == (1, "a")  # start took its keyword out
    assert _outcome(starts.run) == (None, None)  # finished in the caller's context
    assert get_current() is token_context


async def test_coroutine_runs_attached_and_finishes_after_detaching() -> None:
    starts = Starts()
    assert await wrap(coroutine, starts)(2, tag="c") == (2, "c")
    assert _outcome(starts.run) == (None, None)
    assert _current() is None


def _failing_plain() -> None:
    assert _current() == "run"
    raise ValueError("plain failed")


async def _failing_coroutine() -> None:
    await asyncio.sleep(0)
    raise KeyError("coroutine failed")


def test_a_plain_error_finishes_with_it_after_detaching() -> None:
    starts = Starts()
    with pytest.raises(ValueError, match="plain failed"):
        wrap(_failing_plain, starts)()
    assert _outcome(starts.run) == ("ValueError", None)
    assert _current() is None


async def test_a_coroutine_error_finishes_with_it_after_detaching() -> None:
    starts = Starts()
    with pytest.raises(KeyError):
        await wrap(_failing_coroutine, starts)()
    assert _outcome(starts.run) == ("KeyError", None)


def test_a_generator_is_attached_only_while_it_runs() -> None:
    starts = Starts()
    gen = wrap(generator, starts)(3, tag="g")
    assert starts.runs == []  # nothing runs before the first next()
    seen = []
    for item in gen:
        seen.append(item)
        assert _current() is None  # between items the consumer's context is its own
    assert seen == ["g", "g", "g"]
    assert _outcome(starts.run) == (None, None)


def test_a_generator_keeps_its_return_value_and_forwards_send_and_throw() -> None:
    def echo() -> Iterator[object]:
        got = yield "ready"
        try:
            yield (got, _current())
        except LookupError as exc:
            yield (repr(exc), _current())
        return "done"

    starts = Starts()
    gen = wrap(echo, starts)()
    assert next(gen) == "ready"
    assert gen.send("x") == ("x", "run")
    assert gen.throw(KeyError("k")) == ("KeyError('k')", "run")
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"
    assert _outcome(starts.run) == (None, None)


def _endless(cleanup: list[object]) -> Callable[[], Iterator[int]]:
    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            cleanup.append(_current())

    return endless


@pytest.mark.parametrize("how", ["close", "break", "gc"])
def test_a_generator_stopped_early_closes_inside_and_finishes_once(how: str) -> None:
    cleanup: list[object] = []
    starts = Starts()
    gen = wrap(_endless(cleanup), starts)()
    if how == "close":
        next(gen)
        gen.close()
    elif how == "break":
        for n in gen:
            if n == 2:
                break
        del gen
    else:
        next(gen)
        del gen
        gc.collect()
    assert cleanup == ["run"]  # the wrapped generator's finally ran with the run attached
    assert _outcome(starts.run) == (None, None)
    assert _current() is None


def test_a_generator_error_while_closing_is_finished_with() -> None:
    def stubborn() -> Iterator[int]:
        try:
            yield 1
        finally:
            raise OSError("cleanup failed")

    starts = Starts()
    gen = wrap(stubborn, starts)()
    next(gen)
    with pytest.raises(OSError, match="cleanup failed"):
        gen.close()
    assert _outcome(starts.run) == ("OSError", None)


def test_a_generator_error_mid_way_finishes_with_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("mid-stream")

    starts = Starts()
    with pytest.raises(RuntimeError, match="mid-stream"):
        list(wrap(failing, starts)())
    assert _outcome(starts.run) == ("RuntimeError", None)


def test_a_generator_function_that_cannot_be_called_finishes_with_the_error() -> None:
    starts = Starts()
    gen = wrap(generator, starts)("not", "two")  # wrong arguments: raised at the first next()
    with pytest.raises(TypeError):
        next(gen)
    assert _outcome(starts.run) == ("TypeError", None)


async def test_an_async_generator_is_attached_only_while_it_runs() -> None:
    starts = Starts()
    seen = []
    async for item in wrap(async_generator, starts)(3, tag="ag"):
        seen.append(item)
        assert _current() is None
    assert seen == ["ag", "ag", "ag"]
    assert _outcome(starts.run) == (None, None)


async def test_an_async_generator_forwards_asend_and_athrow() -> None:
    async def echo() -> AsyncIterator[object]:
        got = yield "ready"
        try:
            yield (got, _current())
        except LookupError as exc:
            yield (repr(exc), _current())

    starts = Starts()
    agen = wrap(echo, starts)()
    assert await agen.asend(None) == "ready"
    assert await agen.asend("x") == ("x", "run")
    assert await agen.athrow(KeyError("k")) == ("KeyError('k')", "run")
    with pytest.raises(StopAsyncIteration):
        await agen.asend(None)
    assert _outcome(starts.run) == (None, None)


def _async_endless(cleanup: list[object]) -> Callable[[], AsyncIterator[int]]:
    async def endless() -> AsyncIterator[int]:
        try:
            n = 0
            while True:
                await asyncio.sleep(0)
                yield n
                n += 1
        finally:
            cleanup.append(_current())

    return endless


@pytest.mark.parametrize("how", ["aclose", "aclosing-break", "break-then-gc"])
async def test_an_async_generator_stopped_early_closes_inside_and_finishes_once(how: str) -> None:
    cleanup: list[object] = []
    starts = Starts()
    agen = wrap(_async_endless(cleanup), starts)()
    if how == "aclose":
        await agen.__anext__()
        await agen.aclose()
    elif how == "aclosing-break":
        async with aclosing(agen) as stream:
            async for n in stream:
                if n == 2:
                    break
    else:
        async for n in agen:
            if n == 1:
                break
        del agen
        gc.collect()
        await asyncio.sleep(0.05)  # the loop's async-generator finaliser closes it
    assert cleanup == ["run"]
    assert _outcome(starts.run) == (None, None)
    assert _current() is None


async def test_an_async_generator_error_mid_way_finishes_with_it() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("mid-stream")

    starts = Starts()
    with pytest.raises(RuntimeError, match="mid-stream"):
        async for _ in wrap(failing, starts)():
            pass
    assert _outcome(starts.run) == ("RuntimeError", None)


async def test_concurrent_coroutines_each_run_in_their_own_context() -> None:
    starts = Starts()

    async def step(i: int) -> list[object]:
        seen = []
        for _ in range(3):
            seen.append(_current())
            await asyncio.sleep(0)
        return seen

    wrapped = wrap(step, starts)
    results = await asyncio.gather(*(wrapped(i, tag=f"t{i}") for i in range(4)))
    assert results == [[f"t{i}"] * 3 for i in range(4)]
    assert [_outcome(run) for run in starts.runs] == [(None, None)] * 4
