"""Worker set-up: the ``worker_process_setup_hook`` and the ``runtime_env`` that installs it."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

from kilostar_otel._internals import ray_in_worker
from kilostar_otel.integrations.ray._flush import Flushing, FlushLocalRoots, tracing_configured

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "ENDPOINT_ENV",
    "FLUSH_TIMEOUT_ENV",
    "LOG_FORMAT_ENV",
    "PROTOCOL_ENV",
    "RAY_TRACING_STARTUP_HOOK",
    "SERVICE_NAME_ENV",
    "SETUP_HOOK",
    "USER_SETUP_HOOK_ENV",
    "role_runtime_env",
    "setup_worker",
    "setup_worker_then",
    "warn_unconfigured",
    "worker_runtime_env",
]

#: ``runtime_env={"worker_process_setup_hook": SETUP_HOOK}`` configures tracing in every worker.
SETUP_HOOK: Final = "kilostar_otel.integrations.ray.setup_worker"
#: The same function in the ``module:attribute`` form of ``ray.init(_tracing_startup_hook=...)``.
RAY_TRACING_STARTUP_HOOK: Final = "kilostar_otel.integrations.ray:setup_worker"

#: Environment read by :func:`setup_worker` (set them with :func:`worker_runtime_env`).
SERVICE_NAME_ENV: Final = "KILOSTAR_OTEL_RAY_SERVICE_NAME"
ENDPOINT_ENV: Final = "KILOSTAR_OTEL_RAY_ENDPOINT"
PROTOCOL_ENV: Final = "KILOSTAR_OTEL_RAY_PROTOCOL"
FLUSH_TIMEOUT_ENV: Final = "KILOSTAR_OTEL_RAY_FLUSH_TIMEOUT"
DEFAULT_SERVICE_NAME: Final = "kilostar-ray-worker"
#: ``ids`` (the default): worker log lines show the ids; ``keep``: leave the worker's logging be.
LOG_FORMAT_ENV: Final = "KILOSTAR_OTEL_RAY_LOG_FORMAT"
#: The job's own ``worker_process_setup_hook`` (a dotted path), run after :func:`setup_worker`.
USER_SETUP_HOOK_ENV: Final = "KILOSTAR_OTEL_RAY_USER_SETUP_HOOK"

# The package's logger: its warnings are documented under this name.
_log = logging.getLogger("kilostar_otel.integrations.ray")


class _Setup:
    """This process's set-up flags."""

    configured_here = False
    warned_unconfigured = False
    lock = threading.Lock()


def warn_unconfigured() -> None:
    """Log, once per process, that a traced call arrived where tracing was never set up."""
    with _Setup.lock:
        if _Setup.warned_unconfigured:
            return
        _Setup.warned_unconfigured = True
    _log.warning(
        "kilostar_otel: a traced Ray call arrived in worker process %d, but tracing was never set "
        "up in this process, so its spans are dropped. Start Ray with runtime_env="
        "{'worker_process_setup_hook': '%s'} (see kilostar_otel.integrations.ray."
        "worker_runtime_env). This warning is logged once per process.",
        os.getpid(),
        SETUP_HOOK,
    )


def _worker_resource() -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {"process.pid": os.getpid()}
    try:
        import ray

        if not ray.is_initialized():
            # As Ray's tracing hook, this runs before the worker is connected, where asking for
            # the runtime context would start a second, local Ray instance.
            return attributes
        runtime = ray.get_runtime_context()
        attributes["ray.job_id"] = runtime.get_job_id()
        attributes["ray.node_id"] = runtime.get_node_id()
        attributes["ray.worker_id"] = runtime.get_worker_id()
    except Exception:  # noqa: S110 - resource attributes are a nicety
        pass
    return attributes


def setup_worker() -> None:
    """Configure tracing in this Ray worker: OTLP export, the worker's service name, loguru.

    The ``worker_process_setup_hook`` (``SETUP_HOOK``); it also works as Ray's
    ``_tracing_startup_hook`` (``RAY_TRACING_STARTUP_HOOK``), where it leaves the driver alone.
    Reads ``KILOSTAR_OTEL_RAY_SERVICE_NAME``/``_ENDPOINT``/``_PROTOCOL``/``_FLUSH_TIMEOUT``/
    ``_LOG_FORMAT``. Runs once per process and never raises: a failure is logged and the worker
    keeps working. Then it runs the job's own setup hook, if :func:`worker_runtime_env` was given
    one (``KILOSTAR_OTEL_RAY_USER_SETUP_HOOK``); that hook's errors are the job's and propagate.
    """
    _setup_tracing()
    user_hook = os.environ.get(USER_SETUP_HOOK_ENV)
    if user_hook and ray_in_worker():
        _import_hook(user_hook)()


def _import_hook(path: str) -> Callable[[], Any]:
    """Ray's form of a setup hook: ``package.module.function``."""
    module, _, name = path.rpartition(".")
    hook: Callable[[], Any] = getattr(importlib.import_module(module), name)
    return hook


def setup_worker_then(user_hook: Callable[[], Any]) -> None:
    """:func:`setup_worker`, then the job's own callable setup hook (see worker_runtime_env)."""
    setup_worker()
    user_hook()


def _setup_tracing() -> None:
    try:
        timeout = os.environ.get(FLUSH_TIMEOUT_ENV)
        if timeout:
            Flushing.timeout = max(float(timeout), 0.0)
    except ValueError:
        _log.warning("kilostar_otel: ignoring %s: not a number", FLUSH_TIMEOUT_ENV)
    if not ray_in_worker():
        # Ray's tracing hook also runs in the driver, which configures tracing itself.
        return
    with _Setup.lock:
        if _Setup.configured_here or tracing_configured():
            return
        _Setup.configured_here = True
    try:
        from kilostar_otel.configure import configure

        kwargs: dict[str, Any] = {
            "service_name": os.environ.get(SERVICE_NAME_ENV) or DEFAULT_SERVICE_NAME,
            "resource_attributes": _worker_resource(),
        }
        endpoint = os.environ.get(ENDPOINT_ENV)
        if endpoint:
            kwargs["endpoint"] = endpoint
        protocol = os.environ.get(PROTOCOL_ENV)
        if protocol:
            kwargs["protocol"] = protocol
        telemetry = configure(**kwargs)
        telemetry.tracer_provider.add_span_processor(FlushLocalRoots())
        Flushing.local_roots = True
    except Exception:
        _log.warning("kilostar_otel: tracing setup failed in Ray worker", exc_info=True)
        return
    _install_loguru_patcher()
    if os.environ.get(LOG_FORMAT_ENV, "ids") != "keep":
        _show_ids_in_logs()


def _show_ids_in_logs() -> None:
    """Worker log lines show the ids: the stdlib root handlers and loguru's default sink."""
    try:
        from kilostar_otel.integrations.logging import FORMAT, LOGURU_FORMAT, RequestIdFilter

        root = logging.getLogger()
        if not root.handlers:
            stream = logging.StreamHandler()
            stream.setFormatter(logging.Formatter(FORMAT))
            root.addHandler(stream)
        for handler in root.handlers:
            if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
                handler.addFilter(RequestIdFilter())
        if "loguru" in sys.modules or importlib.util.find_spec("loguru") is not None:
            from loguru import logger

            try:
                logger.remove(0)  # loguru's default stderr sink, if the job kept it
            except ValueError:
                return
            logger.add(sys.stderr, format=LOGURU_FORMAT)
    except Exception:
        _log.warning("kilostar_otel: could not add the ids to the worker's logs", exc_info=True)


def _install_loguru_patcher() -> None:
    try:
        import loguru  # noqa: F401
    except ImportError:
        return
    try:
        from kilostar_otel.integrations.logging import install_loguru

        install_loguru()
    except Exception:
        _log.warning("kilostar_otel: could not install the loguru patcher", exc_info=True)


def worker_runtime_env(
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    service_name: str | None = None,
    flush_timeout: float | None = None,
    log_format: Literal["ids", "keep"] = "ids",
    runtime_env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a job ``runtime_env`` that sets up tracing in every worker with :func:`setup_worker`.

    Pass it to ``ray.init(runtime_env=...)`` or as ``--runtime-env-json`` to ``ray job submit``.
    ``endpoint``/``protocol`` are the driver's OTLP settings; ``service_name`` names the workers.
    ``log_format="ids"`` (the default) makes worker log lines show the ids (stdlib logging with
    :data:`~kilostar_otel.integrations.logging.FORMAT`, loguru's default sink with
    ``LOGURU_FORMAT``); ``"keep"`` leaves the worker's logging as it is. A
    ``worker_process_setup_hook`` already in ``runtime_env`` is kept: it runs after ours.
    """
    if log_format not in ("ids", "keep"):
        raise ValueError(f"log_format must be 'ids' or 'keep', not {log_format!r}")
    env = dict(runtime_env or {})
    env_vars = dict(env.get("env_vars") or {})
    user_hook = env.get("worker_process_setup_hook")
    hook: Any = SETUP_HOOK
    if isinstance(user_hook, str) and user_hook not in (SETUP_HOOK, ""):
        env_vars[USER_SETUP_HOOK_ENV] = user_hook  # a path also works with ray job submit
    elif callable(user_hook) and user_hook is not setup_worker:
        hook = functools.partial(setup_worker_then, user_hook)
    elif user_hook not in (None, "", SETUP_HOOK, setup_worker):
        raise TypeError(f"worker_process_setup_hook must be a str or callable, not {user_hook!r}")
    for name, value in (
        (ENDPOINT_ENV, endpoint),
        (PROTOCOL_ENV, protocol),
        (SERVICE_NAME_ENV, service_name),
        (FLUSH_TIMEOUT_ENV, None if flush_timeout is None else repr(float(flush_timeout))),
        (LOG_FORMAT_ENV, None if log_format == "ids" else log_format),
    ):
        if value is not None:
            env_vars[name] = value
    if env_vars:
        env["env_vars"] = env_vars
    env["worker_process_setup_hook"] = hook
    return env


def role_runtime_env(service_name: str) -> dict[str, Any]:
    """Return an actor or task ``runtime_env`` that gives its worker its own service name.

    ``Planner.options(runtime_env=role_runtime_env("planner")).remote()``: Ray merges these
    ``env_vars`` with the job's, so the job's setup hook still runs, in a dedicated worker.
    """
    return {"env_vars": {SERVICE_NAME_ENV: service_name}}
