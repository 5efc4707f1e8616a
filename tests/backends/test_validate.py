"""2. Every collector configuration in collector-config/ passes the real collector's ``validate``.

``validate`` builds every component from the file (as ``--config`` at start-up does) without
starting the pipelines, so an unknown component, a setting the component does not take, or a
broken ``${env:...}`` reference fails here. The files are validated as docker compose runs them
(every variable at its default) and as the tests run them (addresses and timings from variables).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import AGENT, CONFIG_DIR, GATEWAY, ROOT, SINGLE, backend_binary, clean_env

#: Jaeger's Go module v1.76.0 is the release Jaeger v2 calls 2.13.0 (CHANGELOG: v1.76.0 / v2.13.0).
JAEGER_MODULE = "v1.76.0"
JAEGER_V2 = "2.13.0"

COLLECTOR_CONFIGS = sorted(
    p
    for p in CONFIG_DIR.rglob("*")
    if p.suffix in (".yaml", ".yml") and "service" in yaml.safe_load(p.read_text(encoding="utf-8"))
)

TEST_ENV = {
    "COLLECTOR_OTLP_GRPC_ENDPOINT": "127.0.0.1:14317",
    "COLLECTOR_OTLP_HTTP_ENDPOINT": "127.0.0.1:14318",
    "COLLECTOR_HEALTH_ENDPOINT": "127.0.0.1:14133",
    "COLLECTOR_METRICS_HOST": "127.0.0.1",
    "COLLECTOR_METRICS_PORT": "18888",
    "JAEGER_OTLP_GRPC_ENDPOINT": "127.0.0.1:24317",
    "TAIL_SAMPLING_DECISION_WAIT": "1s",
    "TAIL_SAMPLING_PERCENTAGE": "25",
    "BATCH_TIMEOUT": "100ms",
    "GATEWAY_DNS_ENABLED": "false",
    "GATEWAY_STATIC_ENABLED": "true",
    "GATEWAY_HOSTNAMES": "[127.0.0.1:14319, 127.0.0.1:14320]",
}


def validate(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(backend_binary("collector")), "validate", f"--config={config}"],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_collector_configs_are_the_three_we_ship() -> None:
    assert sorted([SINGLE, AGENT, GATEWAY]) == COLLECTOR_CONFIGS


@pytest.mark.parametrize("config", COLLECTOR_CONFIGS, ids=rel)
def test_validates_as_docker_compose_runs_it(config: Path) -> None:
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", COLLECTOR_CONFIGS, ids=rel)
def test_validates_with_the_test_addresses(config: Path) -> None:
    result = validate(config, **TEST_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def test_validate_rejects_what_the_collector_would_not_run(tmp_path: Path) -> None:
    text = SINGLE.read_text(encoding="utf-8")
    unknown = tmp_path / "unknown-setting.yaml"
    unknown.write_text(text.replace("decision_wait:", "decision_wiat:"), encoding="utf-8")
    result = validate(unknown)
    assert result.returncode != 0
    assert "decision_wiat" in result.stdout + result.stderr

    bad_value = tmp_path / "bad-percentage.yaml"
    bad_value.write_text(text, encoding="utf-8")
    result = validate(bad_value, TAIL_SAMPLING_DECISION_WAIT="soon")
    assert result.returncode != 0


def test_docker_compose_runs_the_releases_the_tests_build() -> None:
    go_mod = (ROOT / "tools" / "backends" / "collector" / "go.mod").read_text(encoding="utf-8")
    (contrib,) = set(re.findall(r"opentelemetry-collector-contrib/\S+ v(\S+)", go_mod))
    jaeger_mod = (ROOT / "tools" / "backends" / "jaeger" / "go.mod").read_text(encoding="utf-8")
    assert re.search(rf"github.com/jaegertracing/jaeger {JAEGER_MODULE}\b", jaeger_mod)
    for compose in (
        CONFIG_DIR / "docker-compose.yaml",
        CONFIG_DIR / "gateway" / "docker-compose.yaml",
    ):
        services = yaml.safe_load(compose.read_text(encoding="utf-8"))["services"]
        images = {s["image"] for s in services.values() if "image" in s}
        assert f"otel/opentelemetry-collector-contrib:{contrib}" in images, compose
        assert f"jaegertracing/jaeger:{JAEGER_V2}" in images, compose
