"""One real local Ray cluster for the whole session, on 127.0.0.1, exporting to a test receiver.

Ray is imported at module level on purpose: if it is missing or broken, these tests fail at
collection instead of being skipped. The environment below must be set before ``ray`` is
imported (Ray fixes its listen address at import time).
"""

from __future__ import annotations

import os
import warnings

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # node address 127.0.0.1, loopback only
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from kilostar_otel.integrations import ray as kray
from kilostar_otel.viewer import OtlpReceiver

ROOT = str(Path(__file__).resolve().parents[2])
PYTHONPATH = os.environ.get("PYTHONPATH", "")
WORKER_SERVICE = "kilostar-test-worker"
PLANNER_SERVICE = "kilostar-test-planner"


@pytest.fixture(scope="session")
def ray_receiver() -> Iterator[OtlpReceiver]:
    """The OTLP receiver every Ray worker exports to (gRPC on 127.0.0.1)."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


#: The job's own worker setup hook: kilostar's setup_worker must chain it, not replace it.
USER_SETUP_HOOK = "tests.ray.workloads.user_setup_hook"


@pytest.fixture(scope="session")
def ray_cluster(
    tmp_path_factory: pytest.TempPathFactory, ray_receiver: OtlpReceiver
) -> Iterator[Any]:
    """A 2-CPU local cluster whose workers run ``setup_worker`` (tracing to ``ray_receiver``).

    Ray gives a starting node 30 seconds to register; on a loaded machine that can pass. Then the
    start is retried once, with a fresh directory, and a warning in the test report says so.
    """

    def start() -> Any:
        return kray.start_local_cluster(
            tmp_path_factory.mktemp("ray"),
            num_cpus=2,
            endpoint=f"http://{ray_receiver.grpc_endpoint}",
            protocol="grpc",
            service_name=WORKER_SERVICE,
            # The hook runs before Ray puts the driver's directory on the worker's path.
            runtime_env={
                "worker_process_setup_hook": USER_SETUP_HOOK,
                "env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [ROOT, PYTHONPATH]))},
            },
        )

    try:
        context = start()
    except Exception as exc:
        ray.shutdown()
        warnings.warn(
            f"the local Ray cluster did not start ({type(exc).__name__}: {exc}); "
            "retrying once (a slow start on a loaded machine)",
            stacklevel=1,
        )
        context = start()
    yield context
    ray.shutdown()
