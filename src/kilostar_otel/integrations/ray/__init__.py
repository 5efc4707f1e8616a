"""Ray: remote tasks and actor methods that keep the caller's ids and trace.

Ray deliberately does not carry contextvars into tasks and actors. :func:`remote` (a drop-in for
``ray.remote``) makes every call carry :func:`~kilostar_otel.snapshot` as one extra keyword
argument, ``_kilostar_ctx``; the callee applies it for exactly the duration of that call, inside a
span that is a child of the caller's span. Plain, ``async``, generator and async-generator
functions and actor methods are supported, with or without Ray's own tracing hook.

:func:`setup_worker` is the ``worker_process_setup_hook`` (an importable string path, so it also
works with job submission) that configures tracing and the loguru patcher in every Ray worker.
Because Ray may kill pool workers without running ``atexit``, each traced call flushes its spans
before its result goes back to the caller. See ``docs/ray.md`` for the model.

``ray`` itself is imported lazily: importing this package does not import Ray, so
:func:`start_local_cluster` can still set the environment that Ray reads at import time.

The package's modules: ``_caller`` (:func:`remote` and the proxies), ``_callee`` (the wrapper
that applies a snapshot for one call), ``_flush`` (exporting before a result returns),
``_worker`` (:func:`setup_worker` and the ``runtime_env`` helpers) and ``_cluster``
(:func:`start_local_cluster`).
"""

from __future__ import annotations

from kilostar_otel.integrations.ray._callee import SNAPSHOT_KWARG
from kilostar_otel.integrations.ray._caller import (
    TracedActorClass,
    TracedActorHandle,
    TracedRemoteFunction,
    remote,
    traced_handle,
    unwrap,
)
from kilostar_otel.integrations.ray._cluster import start_local_cluster
from kilostar_otel.integrations.ray._flush import DEFAULT_FLUSH_TIMEOUT
from kilostar_otel.integrations.ray._worker import (
    DEFAULT_SERVICE_NAME,
    ENDPOINT_ENV,
    FLUSH_TIMEOUT_ENV,
    LOG_FORMAT_ENV,
    PROTOCOL_ENV,
    RAY_TRACING_STARTUP_HOOK,
    SERVICE_NAME_ENV,
    SETUP_HOOK,
    USER_SETUP_HOOK_ENV,
    role_runtime_env,
    setup_worker,
    setup_worker_then,
    worker_runtime_env,
)

__all__ = [
    "DEFAULT_FLUSH_TIMEOUT",
    "DEFAULT_SERVICE_NAME",
    "ENDPOINT_ENV",
    "FLUSH_TIMEOUT_ENV",
    "LOG_FORMAT_ENV",
    "PROTOCOL_ENV",
    "RAY_TRACING_STARTUP_HOOK",
    "SERVICE_NAME_ENV",
    "SETUP_HOOK",
    "SNAPSHOT_KWARG",
    "USER_SETUP_HOOK_ENV",
    "TracedActorClass",
    "TracedActorHandle",
    "TracedRemoteFunction",
    "remote",
    "role_runtime_env",
    "setup_worker",
    "setup_worker_then",
    "start_local_cluster",
    "traced_handle",
    "unwrap",
    "worker_runtime_env",
]
