"""configure() under gunicorn --preload: every worker re-initialises, none fails to boot or loses
spans, whether the master exported before forking (a shared keep-alive socket) or not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.resources import Resource

from kilostar_otel.viewer import OtlpReceiver
from tests.otlp.conftest import clean_env, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 60
STEPS = 20  # spans of 4 KiB each request (served_app.STEPS)
#: The SDK sets a per-process service.instance.id (newer releases); 1.40 sets none.
_SDK_SETS_INSTANCE_ID = "service.instance.id" in Resource.create().attributes


def _serve(
    receiver: OtlpReceiver,
    worker: str,
    protocol: str,
    workers: int,
    preload: bool,
    post_fork: bool,
    tmp: Path,
) -> tuple[list[dict[str, object]], str]:
    port = free_port()
    endpoint = "http://" + receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    env = clean_env(
        APP_SERVICE="forked-svc",
        EXPORT_BEFORE_FORK="1" if preload else "0",
        POST_FORK_CONFIGURE="1" if post_fork else "0",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        # gRPC's own rule: a child may use gRPC after the parent did only with fork support.
        GRPC_ENABLE_FORK_SUPPORT="true" if protocol == "grpc" else "false",
    )
    app = "served_app:wsgi_app" if worker == "sync" else "served_app:asgi_app"
    kind = "sync" if worker == "sync" else "uvicorn_worker.UvicornWorker"
    command = [
        sys.executable, "-m", "gunicorn", "--chdir", str(Path(__file__).parent),
        "-c", str(Path(__file__).parent / "gunicorn_conf.py"),
        "-w", str(workers), "-k", kind, "-b", f"127.0.0.1:{port}",
        *(["--preload"] if preload else []), app,
    ]  # fmt: skip
    log = (tmp / "gunicorn.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    log.close()
    try:
        wait_for_port(port, proc, timeout=60)
        time.sleep(1.0)  # every worker has booted (or failed to)

        def one(n: int) -> dict[str, object]:
            response = httpx.get(f"http://127.0.0.1:{port}/{n}", timeout=30)
            response.raise_for_status()
            answer: dict[str, object] = response.json()
            return answer

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(REQUESTS)))
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # graceful: workers exit, flushing their spans
        proc.wait(timeout=60)
    return answers, (tmp / "gunicorn.log").read_text(errors="replace")


@pytest.mark.parametrize(
    ("worker", "protocol", "workers", "preload", "post_fork"),
    [
        ("sync", "grpc", 2, True, True),
        ("sync", "http/protobuf", 4, True, True),
        ("uvicorn", "grpc", 3, True, True),
        ("uvicorn", "http/protobuf", 4, True, True),
        ("sync", "http/protobuf", 3, True, False),  # only the at-fork hook re-initialises
        ("sync", "http/protobuf", 2, False, True),
    ],
)
def test_every_worker_boots_reinitialises_and_exports_everything(
    receiver: OtlpReceiver,
    tmp_path: Path,
    worker: str,
    protocol: str,
    workers: int,
    preload: bool,
    post_fork: bool,
) -> None:
    answers, log = _serve(receiver, worker, protocol, workers, preload, post_fork, tmp_path)
    assert "Worker failed to boot" not in log and "Traceback" not in log, log
    # Each worker exports through its own exporter (own connections), and none failed.
    assert all(a["own_exporter"] is preload and a["failed"] == 0 for a in answers), answers
    pids = Counter(int(str(a["pid"])) for a in answers)
    assert len(pids) >= 2, f"requests did not spread over the workers: {pids}"

    expected = REQUESTS * (1 + STEPS) + (1 if preload else 0)
    spans = receiver.wait_for_spans(expected, timeout=30)
    time.sleep(0.5)
    spans = receiver.spans()
    requests = [s for s in spans if s.name == "request"]
    assert len(requests) == REQUESTS  # nothing lost, nothing sent twice
    assert len([s for s in spans if s.name == "step"]) == REQUESTS * STEPS
    assert Counter(int(s.attributes["worker.pid"]) for s in requests) == pids

    for span in requests:
        assert span.resource["service.name"] == "forked-svc"
    instances = {int(str(a["pid"])): a["instance"] for a in answers}
    if not _SDK_SETS_INSTANCE_ID:
        # Before the SDK set a per-process service.instance.id there is none to renew (and so no
        # resource conflict in the child): no worker reports one and no span carries one.
        assert set(instances.values()) == {None}
        assert all("service.instance.id" not in s.resource for s in spans)
        return
    # Each worker has its own service.instance.id, the one it reported, unlike the master's.
    assert len(set(instances.values())) == len(instances)
    for span in requests:
        assert span.resource["service.instance.id"] == instances[span.attributes["worker.pid"]]
    if preload:
        (before,) = [s for s in spans if s.name == "before-fork"]
        assert before.resource["service.instance.id"] not in instances.values()
