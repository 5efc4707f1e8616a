"""One engine that runs a wrapped callable inside a context: the decorators of ``workflow()`` and
of the Ray integration both use it.

:func:`wrap` returns a wrapper of the same kind as the callable (plain function, coroutine
function, generator function or async-generator function: ``inspect`` sees the same kind, which
Ray relies on). Each call of the wrapper asks ``start`` for a :class:`Run`, the caller's view of
one execution, and keeps to these rules:

* **Attached only while the body runs.** The run's context is attached around the body and, for
  generators, around each step (``send``/``throw``/``close`` and their async forms), never across
  a ``yield``: between items the consumer's context is its own, and a generator that is closed
  early, or finalised in another thread or task, never resets a token that is not current.
  A coroutine keeps it across its own awaits: it runs in its task's context.
* **Detach first, then finish.** When the body has returned or raised, the context is detached
  before :meth:`Run.finish` runs. Finishing may block (the Ray callee flushes its spans) or raise,
  and the caller's context must already be back whatever it does; what finishing triggers (span
  processors, exporters, their log records) belongs to the caller, not to the finished run.
* **Finished exactly once**, with the exception that ended the body, or ``None`` on return,
  exhaustion and an early close (``GeneratorExit``). The async kinds call
  :meth:`Run.finish_async` instead, so finishing can wait without blocking an event loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from contextvars import Token
from typing import Any, Protocol

from opentelemetry.context import Context

# The module, not its ``attach_context``: a wrapper must stay picklable (Ray ships wrapped
# functions to its workers by value), and the fast ``attach_context`` is a bound method of an
# unpicklable ContextVar, so it is looked up through the module at call time.
from kilostar_otel import _internals

__all__ = ["Run", "Start", "detach", "wrap"]


class Run(Protocol):
    """One execution of a wrapped call: the context it runs in and how it ends."""

    @property
    def context(self) -> Context:
        """The context attached while the wrapped body runs."""
        ...

    def finish(self, exc: BaseException | None) -> None:
        """End the run of a plain function or generator (after the context is detached)."""
        ...

    async def finish_async(self, exc: BaseException | None) -> None:
        """End the run of a coroutine or async generator (after the context is detached)."""
        ...


#: Makes the :class:`Run` of one call; it may take its own keyword arguments out of ``kwargs``.
Start = Callable[[dict[str, Any]], Run]


def detach(token: Token[Context]) -> None:
    """Reset the context ``token`` came from; a token from another context is ignored."""
    try:
        _internals.reset_context(token)
    except (ValueError, RuntimeError):
        # Created in another context (e.g. a generator finalised elsewhere): nothing to undo here.
        pass


def wrap(fn: Callable[..., Any], start: Start) -> Callable[..., Any]:
    """Return ``fn`` wrapped so that each call runs in the context of ``start(kwargs)``.

    The wrapper is of the same kind as ``fn`` and carries its metadata (``functools.wraps``).
    """
    wrapper: Callable[..., Any]
    if inspect.isasyncgenfunction(fn):
        wrapper = _wrap_async_generator(fn, start)
    elif inspect.isgeneratorfunction(fn):
        wrapper = _wrap_generator(fn, start)
    elif inspect.iscoroutinefunction(fn):
        wrapper = _wrap_coroutine(fn, start)
    else:
        wrapper = _wrap_function(fn, start)
    return functools.update_wrapper(wrapper, fn)


def _wrap_function(fn: Callable[..., Any], start: Start) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        run = start(kwargs)
        token = _internals.attach_context(run.context)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            detach(token)
            run.finish(exc)
            raise
        detach(token)
        run.finish(None)
        return result

    return wrapper


def _wrap_coroutine(fn: Callable[..., Any], start: Start) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        run = start(kwargs)
        token = _internals.attach_context(run.context)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            detach(token)
            await run.finish_async(exc)
            raise
        detach(token)
        await run.finish_async(None)
        return result

    return wrapper


def _wrap_generator(
    fn: Callable[..., Generator[Any, Any, Any]], start: Start
) -> Callable[..., Generator[Any, Any, Any]]:
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        # Runs at the first next(): a generator that is never started has no run.
        run = start(kwargs)
        token = _internals.attach_context(run.context)
        try:
            gen = fn(*args, **kwargs)
        except BaseException as exc:
            detach(token)
            run.finish(exc)
            raise
        detach(token)
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = _internals.attach_context(run.context)
            try:
                item = gen.send(to_send) if to_throw is None else gen.throw(to_throw)
            except StopIteration as stop:
                detach(token)
                run.finish(None)
                return stop.value
            except BaseException as exc:
                detach(token)
                run.finish(exc)
                raise
            detach(token)
            to_throw = None
            try:
                to_send = yield item
            except GeneratorExit:
                token = _internals.attach_context(run.context)
                try:
                    gen.close()
                except BaseException as exc:
                    detach(token)
                    run.finish(exc)
                    raise
                detach(token)
                run.finish(None)
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper


def _wrap_async_generator(
    fn: Callable[..., AsyncGenerator[Any, Any]], start: Start
) -> Callable[..., AsyncGenerator[Any, Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        run = start(kwargs)
        token = _internals.attach_context(run.context)
        try:
            agen = fn(*args, **kwargs)
        except BaseException as exc:
            detach(token)
            await run.finish_async(exc)
            raise
        detach(token)
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = _internals.attach_context(run.context)
            try:
                if to_throw is None:
                    item = await agen.asend(to_send)
                else:
                    item = await agen.athrow(to_throw)
            except StopAsyncIteration:
                detach(token)
                await run.finish_async(None)
                return
            except BaseException as exc:
                detach(token)
                await run.finish_async(exc)
                raise
            detach(token)
            to_throw = None
            try:
                to_send = yield item
            except GeneratorExit:
                token = _internals.attach_context(run.context)
                try:
                    await agen.aclose()
                except BaseException as exc:
                    detach(token)
                    await run.finish_async(exc)
                    raise
                detach(token)
                await run.finish_async(None)
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper
