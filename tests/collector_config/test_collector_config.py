"""collector-config/: every YAML parses, every pipeline is wired to defined components, and the
ports, host names and attribute names agree with each other, with the code and with the docs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from kilostar_otel.cli import build_parser
from kilostar_otel.ids import new_trace_id
from kilostar_otel.processor import TRACE_ID_ATTRIBUTE
from kilostar_otel.workflow import WORKFLOW_STARTED_EVENT

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "collector-config"
SINGLE = CONFIG_DIR / "otel-collector.yaml"
AGENT = CONFIG_DIR / "gateway" / "agent.yaml"
GATEWAY = CONFIG_DIR / "gateway" / "gateway.yaml"
COMPOSE = CONFIG_DIR / "docker-compose.yaml"
GATEWAY_COMPOSE = CONFIG_DIR / "gateway" / "docker-compose.yaml"
JAEGER_DOC = ROOT / "docs" / "jaeger.md"
SCALING_DOC = ROOT / "docs" / "scaling.md"

ALL_YAML = sorted(p for p in CONFIG_DIR.rglob("*") if p.suffix in (".yaml", ".yml"))
COLLECTOR_CONFIGS = [SINGLE, AGENT, GATEWAY]
COMPOSE_FILES = [COMPOSE, GATEWAY_COMPOSE]
SECTIONS = {"receivers": "receivers", "processors": "processors", "exporters": "exporters"}


ENV_REF = re.compile(r"\$\{env:(\w+)(?::-([^}]*))?\}")


def with_defaults(value: Any) -> Any:
    """``${env:NAME:-default}`` -> the default, as the collector reads it with NAME unset (a whole
    value that is one reference is parsed as YAML: ``8888`` an int, ``true`` a bool)."""
    if isinstance(value, dict):
        return {k: with_defaults(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_defaults(v) for v in value]
    if isinstance(value, str) and (match := ENV_REF.fullmatch(value)):
        return yaml.safe_load(match.group(2) or "")
    if isinstance(value, str):
        return ENV_REF.sub(lambda m: m.group(2) or "", value)
    return value


def load(path: Path) -> dict[str, Any]:
    """The file as docker compose runs it: every ``${env:...}`` at its default."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return with_defaults(data)  # type: ignore[no-any-return]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def component_type(name: str) -> str:
    """``otlp_grpc/jaeger`` -> ``otlp_grpc`` (the collector's ``type[/name]`` component ids)."""
    return name.split("/", 1)[0]


def host_port(endpoint: str) -> tuple[str, int]:
    parsed = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    assert parsed.hostname and parsed.port, f"endpoint {endpoint!r} has no host:port"
    return parsed.hostname, parsed.port


def published_ports(compose: dict[str, Any]) -> dict[int, str]:
    """Host port -> the service publishing it."""
    found: dict[int, str] = {}
    for service_name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            host, _, container = str(mapping).rpartition(":")
            assert host, f"{service_name}: publish ports as 'host:container', got {mapping!r}"
            assert int(host) == int(container), f"{service_name}: {mapping!r} remaps a port"
            assert int(host) not in found, f"port {host} published twice"
            found[int(host)] = service_name
    return found


def documented_ports(doc: Path) -> set[int]:
    """Ports from the rows of the markdown table whose first cell is a port: ``| `4317` | ...``."""
    rows = re.findall(r"^\|\s*`?(\d{2,5})`?\s*\|", doc.read_text(encoding="utf-8"), re.MULTILINE)
    return {int(port) for port in rows}


def mounted_config(compose_path: Path, service: dict[str, Any]) -> Path:
    """The host file mounted as the collector's --config."""
    command = service["command"]
    flag = next(arg for arg in command if str(arg).startswith("--config="))
    target = flag.split("=", 1)[1]
    for volume in service["volumes"]:
        source, container = str(volume).split(":")[:2]
        if container == target:
            return (compose_path.parent / source).resolve()
    raise AssertionError(f"{compose_path}: --config={target} is not a mounted volume")


def grpc_receiver_port(config: dict[str, Any]) -> int:
    return host_port(config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])[1]


# -- every file ---------------------------------------------------------------------------------


def test_the_configs_are_all_there() -> None:
    assert {rel(p) for p in ALL_YAML} >= {rel(p) for p in [*COLLECTOR_CONFIGS, *COMPOSE_FILES]}


@pytest.mark.parametrize("path", ALL_YAML, ids=rel)
def test_every_yaml_file_parses_to_a_mapping(path: Path) -> None:
    assert load(path)


# -- collector configurations -------------------------------------------------------------------


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=rel)
def test_pipelines_name_only_defined_components_and_use_all_of_them(path: Path) -> None:
    config = load(path)
    pipelines = config["service"]["pipelines"]
    assert pipelines, "no pipelines"
    used: dict[str, set[str]] = {section: set() for section in SECTIONS}
    for pipeline_name, pipeline in pipelines.items():
        assert component_type(pipeline_name) == "traces", f"{pipeline_name}: only traces here"
        assert pipeline.get("receivers") and pipeline.get("exporters"), pipeline_name
        for section in SECTIONS:
            for component in pipeline.get(section, []):
                assert component in (config.get(section) or {}), (
                    f"pipeline {pipeline_name} names {section[:-1]} {component!r}, "
                    f"which is not defined"
                )
                used[section].add(component)
    for section in SECTIONS:
        defined = set(config.get(section) or {})
        assert defined == used[section], f"{section} defined but unused: {defined - used[section]}"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"], f"extension {extension!r} is not defined"


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=rel)
def test_memory_limiter_comes_first_and_batch_after_tail_sampling(path: Path) -> None:
    for pipeline in load(path)["service"]["pipelines"].values():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter"
        assert "batch" in processors
        if "tail_sampling" in processors:
            assert processors.index("tail_sampling") < processors.index("batch")


@pytest.mark.parametrize("path", [SINGLE, AGENT], ids=rel)
def test_the_apps_entry_point_listens_on_4317_grpc_and_4318_http(path: Path) -> None:
    protocols = load(path)["receivers"]["otlp"]["protocols"]
    assert host_port(protocols["grpc"]["endpoint"]) == ("0.0.0.0", 4317)
    assert host_port(protocols["http"]["endpoint"]) == ("0.0.0.0", 4318)


def tail_policies(path: Path) -> list[dict[str, Any]]:
    policies = load(path)["processors"]["tail_sampling"]["policies"]
    assert isinstance(policies, list)
    return policies


@pytest.mark.parametrize("path", [SINGLE, GATEWAY], ids=rel)
def test_tail_sampling_keeps_workflows_their_requests_and_errors_and_samples_the_rest(
    path: Path,
) -> None:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for policy in tail_policies(path):
        assert policy["type"] in policy, f"policy {policy['name']} lacks its {policy['type']} block"
        by_type.setdefault(policy["type"], []).append(policy[policy["type"]])

    (workflows,) = by_type["string_attribute"]
    # The key the span processor stamps on every span of a workflow trace, matching any trace_id.
    assert workflows["key"] == TRACE_ID_ATTRIBUTE
    assert workflows["enabled_regex_matching"] is True
    assert any(re.fullmatch(v, new_trace_id()) for v in workflows["values"])

    (started,) = by_type["ottl_condition"]
    assert any(f'"{WORKFLOW_STARTED_EVENT}"' in cond for cond in started["spanevent"])

    (errors,) = by_type["status_code"]
    assert errors["status_codes"] == ["ERROR"]

    (rest,) = by_type["probabilistic"]
    assert 0 < rest["sampling_percentage"] < 100
    assert "always_sample" not in by_type


def test_single_collector_and_gateways_sample_by_the_same_policies() -> None:
    assert tail_policies(SINGLE) == tail_policies(GATEWAY)


def test_the_agent_routes_by_trace_id_and_does_not_sample() -> None:
    agent = load(AGENT)
    assert "tail_sampling" not in agent["processors"]
    lb = agent["exporters"]["load_balancing"]
    assert lb["routing_key"] == "traceID"
    assert "endpoint" not in lb["protocol"]["otlp"], "the resolver supplies the endpoints"


@pytest.mark.parametrize(
    ("config", "compose"), [(SINGLE, COMPOSE), (GATEWAY, GATEWAY_COMPOSE)], ids=["single", "gw"]
)
def test_the_jaeger_exporter_reaches_jaeger_v2_on_its_otlp_grpc_port(
    config: Path, compose: Path
) -> None:
    exporters = load(config)["exporters"]
    (name,) = [e for e in exporters if component_type(e) == "otlp_grpc"]
    host, port = host_port(exporters[name]["endpoint"])
    service = load(compose)["services"][host]
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", service["image"])
    assert port == 4317
    assert service["environment"]["JAEGER_LISTEN_HOST"] == "0.0.0.0"


# -- compose files ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=rel)
def test_compose_mounts_existing_configs_and_builds_from_existing_files(path: Path) -> None:
    compose = load(path)
    for name, service in compose["services"].items():
        if "command" in service and any(str(a).startswith("--config=") for a in service["command"]):
            assert mounted_config(path, service).is_file(), name
        if "build" in service:
            context = (path.parent / service["build"]["context"]).resolve()
            assert context == ROOT
            dockerfile = context / service["build"]["dockerfile"]
            assert dockerfile.is_file()
            for line in dockerfile.read_text(encoding="utf-8").splitlines():
                if line.startswith("COPY "):
                    for source in shlex.split(line)[1:-1]:
                        assert (context / source).exists(), f"{dockerfile}: COPY {source}"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=rel)
def test_compose_runs_jaeger_the_collector_and_the_demo_wired_together(path: Path) -> None:
    compose = load(path)
    services = compose["services"]
    demo = services["demo"]
    args = build_parser().parse_args(demo["command"])  # the CLI accepts exactly this command
    assert args.command == "demo"
    host, port = host_port(args.otlp_endpoint)
    target = services[host]
    config = load(mounted_config(path, target))
    assert port == grpc_receiver_port(config)
    # The demo starts once a one-shot container saw the collector's health check answer.
    (ready,) = demo["depends_on"]
    assert demo["depends_on"][ready] == {"condition": "service_completed_successfully"}
    assert services[ready]["depends_on"] == [host]
    _, health_port = host_port(config["extensions"]["health_check"]["endpoint"])
    assert f"http://{host}:{health_port}/" in "\n".join(services[ready]["command"])


def test_the_gateway_agent_resolves_the_gateway_service_on_its_receiver_port() -> None:
    compose = load(GATEWAY_COMPOSE)
    dns = load(AGENT)["exporters"]["load_balancing"]["resolver"]["dns"]
    gateway_service = compose["services"][dns["hostname"]]
    assert mounted_config(GATEWAY_COMPOSE, gateway_service) == GATEWAY
    assert dns["port"] == grpc_receiver_port(load(GATEWAY))
    assert gateway_service["deploy"]["replicas"] >= 2, "one gateway would not show the routing"
    assert "ports" not in gateway_service, "gateways are reached through the agent only"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=rel)
def test_published_ports_are_the_otlp_ports_and_the_jaeger_ui(path: Path) -> None:
    ports = published_ports(load(path))
    assert ports.keys() == {4317, 4318, 16686}
    compose = load(path)
    assert compose["services"][ports[16686]]["image"].startswith("jaegertracing/jaeger:")
    entry = compose["services"][ports[4317]]
    assert ports[4318] == ports[4317]
    assert grpc_receiver_port(load(mounted_config(path, entry))) == 4317


def test_the_jaeger_walkthrough_documents_exactly_the_published_ports() -> None:
    assert documented_ports(JAEGER_DOC) == set(published_ports(load(COMPOSE)))


def test_the_docs_name_the_files_and_commands_that_exist() -> None:
    jaeger = JAEGER_DOC.read_text(encoding="utf-8")
    scaling = SCALING_DOC.read_text(encoding="utf-8")
    assert "docker compose -f collector-config/docker-compose.yaml up" in jaeger
    assert "docker compose -f collector-config/gateway/docker-compose.yaml up" in scaling
    for text in (jaeger, scaling):
        for path in re.findall(r"collector-config/[\w./-]+\.ya?ml", text):
            assert (ROOT / path).is_file(), f"docs name {path}, which does not exist"


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=rel)
def test_every_variable_has_a_default_so_compose_needs_none(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    refs = ENV_REF.findall(text)
    assert refs, "addresses come from the environment (tests/backends sets them)"
    assert all(default for _, default in refs), [name for name, default in refs if not default]
    assert "${" not in ENV_REF.sub("", text), "a reference the collector would not expand"
