"""The real back ends on 127.0.0.1: Jaeger v2 and the OpenTelemetry Collector from tools/backends/.

``make backends`` builds both binaries once into a cache folder outside the work tree;
``tools/backends/path.sh NAME`` names the file, and these fixtures run it. A missing binary fails
the test (it is never skipped): run ``make backends``. Every process listens on free loopback
ports, is stopped by its pid, and leaves its log under the test's temporary folder.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.otlp.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ROOT / "tools" / "backends"
JAEGER_CONFIG = BACKENDS / "jaeger" / "config.yaml"
CONFIG_DIR = ROOT / "collector-config"
SINGLE = CONFIG_DIR / "otel-collector.yaml"
AGENT = CONFIG_DIR / "gateway" / "agent.yaml"
GATEWAY = CONFIG_DIR / "gateway" / "gateway.yaml"


def backend_binary(name: str) -> Path:
    """The built binary of ``name`` ("jaeger" or "collector"); fails the test if it is missing."""
    out = subprocess.run(
        ["bash", str(BACKENDS / "path.sh"), name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = Path(out)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"the {name} back end is not built ({path} is missing): run `make backends`",
            pytrace=False,
        )
    return path


def clean_env(**overrides: str) -> dict[str, str]:
    """The current environment without OTEL_* settings, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    env.update(overrides)
    return env


class Process:
    """One back-end process: started with its environment, healthy when ``health_url`` says 200."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]

    def wait_healthy(self, health_url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(health_url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{self.name} not healthy within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM by pid, then SIGKILL if it has not exited within 15 s."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


# -- Jaeger -----------------------------------------------------------------------------------


def tags_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """A Jaeger span's (or log's) ``tags``/``fields`` as a dict."""
    entries = item.get("tags", item.get("fields", []))
    return {entry["key"]: entry["value"] for entry in entries}


@dataclass
class JaegerTrace:
    """One trace from Jaeger's query API (``/api/traces/{id}``)."""

    raw: dict[str, Any]
    spans: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.spans = {span["spanID"]: span for span in self.raw["spans"]}

    @property
    def trace_id(self) -> str:
        return str(self.raw["traceID"])

    def service(self, span: Mapping[str, Any]) -> str:
        return str(self.raw["processes"][span["processID"]]["serviceName"])

    def process_tags(self, span: Mapping[str, Any]) -> dict[str, Any]:
        return tags_of(self.raw["processes"][span["processID"]])

    def by_name(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.spans.values() if s["operationName"] == name]

    def one(self, name: str) -> dict[str, Any]:
        (span,) = self.by_name(name)
        return span

    def parent_id(self, span: Mapping[str, Any]) -> str | None:
        """The span id of the CHILD_OF reference inside this trace, if any."""
        for ref in span.get("references", []):
            if ref["refType"] == "CHILD_OF" and ref["traceID"] == self.trace_id:
                return str(ref["spanID"])
        return None

    def roots(self) -> list[dict[str, Any]]:
        return [s for s in self.spans.values() if self.parent_id(s) is None]

    def is_whole(self) -> bool:
        """One root, and every other span's parent is in the trace."""
        parents = [self.parent_id(s) for s in self.spans.values()]
        return parents.count(None) == 1 and all(p in self.spans for p in parents if p)


class Jaeger:
    """A running Jaeger v2: its OTLP endpoints and its query API."""

    def __init__(self, process: Process, ports: Mapping[str, int]) -> None:
        self.process = process
        self.otlp_grpc = f"127.0.0.1:{ports['otlp_grpc']}"
        self.otlp_http = f"127.0.0.1:{ports['otlp_http']}"
        self.query = f"http://127.0.0.1:{ports['query_http']}"
        self.client = httpx.Client(base_url=self.query, timeout=10.0)

    def trace(self, trace_id: str) -> JaegerTrace | None:
        """The trace as Jaeger has it now, or None (404)."""
        response = self.client.get(f"/api/traces/{trace_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data = response.json()["data"]
        return JaegerTrace(data[0]) if data else None

    def find(
        self, service: str, tags: Mapping[str, str] | None = None, limit: int = 1000
    ) -> list[JaegerTrace]:
        """``/api/traces?service=...&tags=...``: the traces with a span that matches."""
        params: dict[str, str | int] = {"service": service, "limit": limit}
        if tags:
            params["tags"] = json.dumps(dict(tags))
        response = self.client.get("/api/traces", params=params)
        response.raise_for_status()
        return [JaegerTrace(t) for t in response.json()["data"] or []]

    def services(self) -> list[str]:
        response = self.client.get("/api/services")
        response.raise_for_status()
        return list(response.json()["data"] or [])

    def wait_trace(self, trace_id: str, spans: int = 1, timeout: float = 30.0) -> JaegerTrace:
        """Poll until the trace has at least ``spans`` spans (it arrives in batches)."""
        deadline = time.monotonic() + timeout
        found: JaegerTrace | None = None
        while time.monotonic() < deadline:
            found = self.trace(trace_id)
            if found is not None and len(found.spans) >= spans:
                return found
            time.sleep(0.2)
        have = 0 if found is None else len(found.spans)
        raise AssertionError(
            f"trace {trace_id}: {have} spans in Jaeger after {timeout}s, want {spans}"
        )

    def wait_find(
        self,
        service: str,
        tags: Mapping[str, str] | None,
        count: int,
        timeout: float = 30.0,
    ) -> list[JaegerTrace]:
        """Poll ``find`` until it returns at least ``count`` traces."""
        deadline = time.monotonic() + timeout
        found: list[JaegerTrace] = []
        while time.monotonic() < deadline:
            found = self.find(service, tags)
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(
            f"{service} {tags}: {len(found)} traces after {timeout}s, want {count}"
        )


def start_jaeger(log: Path) -> Jaeger:
    """Start Jaeger v2 with tools/backends/jaeger/config.yaml on free ports; wait until healthy."""
    ports = {
        k: free_port() for k in ("otlp_grpc", "otlp_http", "query_http", "query_grpc", "health")
    }
    env = clean_env(
        JAEGER_OTLP_GRPC_ENDPOINT=f"127.0.0.1:{ports['otlp_grpc']}",
        JAEGER_OTLP_HTTP_ENDPOINT=f"127.0.0.1:{ports['otlp_http']}",
        JAEGER_QUERY_HTTP_ENDPOINT=f"127.0.0.1:{ports['query_http']}",
        JAEGER_QUERY_GRPC_ENDPOINT=f"127.0.0.1:{ports['query_grpc']}",
        JAEGER_HEALTH_ENDPOINT=f"127.0.0.1:{ports['health']}",
        JAEGER_BATCH_TIMEOUT="100ms",
    )
    process = Process(
        "jaeger", [str(backend_binary("jaeger")), "--config", str(JAEGER_CONFIG)], env, log
    )
    process.wait_healthy(f"http://127.0.0.1:{ports['health']}/status")
    jaeger = Jaeger(process, ports)
    try:  # healthy, and the query API answers
        jaeger.services()
    except Exception:
        process.stop()
        raise
    return jaeger


@pytest.fixture(scope="session")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    """One Jaeger for the session; every test uses its own service names and ids."""
    instance = start_jaeger(tmp_path_factory.mktemp("jaeger") / "jaeger.log")
    yield instance
    instance.client.close()
    instance.process.stop()


# -- the collector ----------------------------------------------------------------------------


class Collector:
    """A running collector: where the app sends OTLP to it."""

    def __init__(self, process: Process, grpc_port: int, http_port: int, metrics_port: int) -> None:
        self.process = process
        self.grpc_endpoint = f"http://127.0.0.1:{grpc_port}"
        self.http_endpoint = f"http://127.0.0.1:{http_port}"
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def metric(self, name: str) -> float:
        """The sum of a counter over its labels, from the collector's own Prometheus endpoint."""
        text = httpx.get(self.metrics_url, timeout=5.0).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


StartCollector = Callable[..., Collector]


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[StartCollector]:
    """``start_collector(config, **env)``: the real collector on free ports, stopped after the test.

    The config's listen addresses, health check and metrics port are set through its environment
    variables; ``env`` adds more (the export address, ``TAIL_SAMPLING_DECISION_WAIT``, ...).
    """
    started: list[Process] = []

    def start(config: Path, **env: str) -> Collector:
        grpc_port, http_port, health, metrics = (free_port() for _ in range(4))
        full_env = clean_env(
            COLLECTOR_OTLP_GRPC_ENDPOINT=f"127.0.0.1:{grpc_port}",
            COLLECTOR_OTLP_HTTP_ENDPOINT=f"127.0.0.1:{http_port}",
            COLLECTOR_HEALTH_ENDPOINT=f"127.0.0.1:{health}",
            COLLECTOR_METRICS_HOST="127.0.0.1",
            COLLECTOR_METRICS_PORT=str(metrics),
            **env,
        )
        log = tmp_path / f"collector-{len(started)}-{config.stem}.log"
        process = Process(
            f"collector ({config.name})",
            [str(backend_binary("collector")), f"--config={config}"],
            full_env,
            log,
        )
        started.append(process)
        process.wait_healthy(f"http://127.0.0.1:{health}/")
        return Collector(process, grpc_port, http_port, metrics)

    yield start
    for process in reversed(started):
        process.stop()
