"""Threads and executors that keep the request id, the workflow id and the OTel context.

A new thread starts with an empty context, and ``loop.run_in_executor`` does not copy the caller's
context (``asyncio.to_thread`` does). This ``ThreadPoolExecutor`` runs every submitted call in a
copy of the context it was submitted from, so ``get_request_id()``, ``get_trace_id()``, the current
span and baggage are the caller's, also through ``loop.run_in_executor(executor, fn)``:

    from kilostar_otel.integrations.threads import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=4) as pool:
        pool.submit(work)                     # sees the caller's ids
    loop.set_default_executor(ThreadPoolExecutor())  # run_in_executor(None, fn) too
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from kilostar_otel.context import wrap

__all__ = ["ThreadPoolExecutor", "wrap"]

_T = TypeVar("_T")


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """Drop-in ``concurrent.futures.ThreadPoolExecutor`` that carries the submitter's context.

    ``submit`` (and so ``map`` and ``loop.run_in_executor``) wraps the call with
    :func:`kilostar_otel.wrap`: each call runs in its own copy of the context current at submit
    time, so a call's changes never leak into the worker thread or into other calls.
    """

    def submit(
        self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[_T]:
        """Schedule ``fn(*args, **kwargs)`` in the submitter's context."""
        return super().submit(wrap(fn), *args, **kwargs)
