"""One real local Ray cluster for the whole session, on 127.0.0.1, exporting to a test receiver.

Ray is imported at module level on purpose: if it is missing or broken, these tests fail at
collection instead of being skipped. The environment below must be set before ``ray`` is
imported (Ray fixes its listen address at import time).
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # node address 127.0.0.1, loopback only
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from collections.abc import Iterator
from typing import Any

import pytest
import ray

from kilostar_otel.integrations import ray as kray
from kilostar_otel.viewer import OtlpReceiver

WORKER_SERVICE = "kilostar-test-worker"
PLANNER_SERVICE = "kilostar-test-planner"


@pytest.fixture(scope="session")
def ray_receiver() -> Iterator[OtlpReceiver]:
    """The OTLP receiver every Ray worker exports to (gRPC on 127.0.0.1)."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def ray_cluster(
    tmp_path_factory: pytest.TempPathFactory, ray_receiver: OtlpReceiver
) -> Iterator[Any]:
    """A 2-CPU local cluster whose workers run ``setup_worker`` (tracing to ``ray_receiver``,
    flush mode ``wait``)."""
    context = kray.start_local_cluster(
        tmp_path_factory.mktemp("ray"),
        num_cpus=2,
        endpoint=f"http://{ray_receiver.grpc_endpoint}",
        protocol="grpc",
        service_name=WORKER_SERVICE,
        # Calls return once their spans are exported, so tests read the receiver right after
        # ray.get (and may kill an actor at once). test_delivery.py runs the default, "idle".
        runtime_env={"env_vars": {kray.FLUSH_MODE_ENV: "wait"}},
    )
    yield context
    ray.shutdown()
