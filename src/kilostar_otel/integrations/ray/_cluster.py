"""A local Ray cluster that stays on loopback, with tracing set up in every worker."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Final

from kilostar_otel._internals import ray_constants_module
from kilostar_otel.integrations.ray._worker import RAY_TRACING_STARTUP_HOOK, worker_runtime_env

__all__ = ["start_local_cluster"]

_logger = logging.getLogger("kilostar_otel.integrations.ray")

_LOOPBACK_ENV: Final = {
    # Ray reads this when ``ray`` is imported: "0" makes the node address 127.0.0.1 and keeps
    # every Ray listener on loopback (``_node_ip_address`` alone is overridden).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    # Quiet gRPC's fork warnings when an OTLP receiver runs in the driver.
    "GRPC_ENABLE_FORK_SUPPORT": "false",
}


def start_local_cluster(
    temp_dir: str | os.PathLike[str],
    *,
    num_cpus: int = 2,
    endpoint: str | None = None,
    protocol: str | None = None,
    service_name: str | None = None,
    ray_tracing_hook: bool = False,
    **init_kwargs: Any,
) -> Any:
    """Start a local Ray cluster that listens on 127.0.0.1 only, with tracing in every worker.

    Ray's files go under ``temp_dir``, the dashboard is off, and the job's ``runtime_env`` runs
    :func:`setup_worker` (see :func:`worker_runtime_env`). Call it before anything imports
    ``ray``: Ray fixes its listen address at import time, so a late call raises RuntimeError
    rather than start a cluster on every interface. A node that misses Ray's fixed start-up
    deadline (a busy machine) is started once more, with a warning. Returns ``ray.init``'s
    context.
    """
    ray_module = sys.modules.get("ray")
    if ray_module is None:
        os.environ.update(_LOOPBACK_ENV)
    else:
        constants = ray_constants_module()
        if constants is None or getattr(constants, "ENABLE_RAY_CLUSTER", True):
            raise RuntimeError(
                "ray was imported before start_local_cluster(): set "
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray to keep it on loopback"
            )
        for key, value in _LOOPBACK_ENV.items():
            os.environ.setdefault(key, value)
    import ray

    runtime_env = worker_runtime_env(
        endpoint=endpoint,
        protocol=protocol,
        service_name=service_name,
        runtime_env=init_kwargs.pop("runtime_env", None),
    )
    kwargs: dict[str, Any] = {
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "_temp_dir": os.fspath(temp_dir),
        "_node_ip_address": "127.0.0.1",
        "runtime_env": runtime_env,
    }
    if ray_tracing_hook:
        kwargs["_tracing_startup_hook"] = RAY_TRACING_STARTUP_HOOK
    kwargs.update(init_kwargs)
    try:
        context: Any = ray.init(**kwargs)
    except Exception as exc:
        # Ray gives its node (and its GCS port file) a fixed 30 s; a busy machine can miss it
        # ("... timed out during startup", "Timed out waiting for file ..."). Once more.
        if "timed out" not in str(exc).lower():
            raise
        _logger.warning("the local Ray node missed Ray's start-up deadline; starting it again")
        ray.shutdown()
        context = ray.init(**kwargs)
    if context.address_info.get("node_ip_address") != "127.0.0.1":
        ray.shutdown()
        raise RuntimeError("the Ray node did not bind 127.0.0.1; refusing to keep it running")
    return context
