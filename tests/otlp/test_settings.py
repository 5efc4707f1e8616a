"""configure()'s settings table: every argument is a row, and every row resolves its argument and
its variables the same way (the argument, else the first variable set, else the default)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace.sampling import DEFAULT_ON

from kilostar_otel import _settings
from kilostar_otel._settings import PARAMS, Found, Param, Settings, lookup, resolve_settings
from kilostar_otel.configure import configure
from kilostar_otel.propagation import default_propagator
from kilostar_otel.sampling import sampler_from_env

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "kilostar_otel"
_PROPAGATOR = default_propagator()


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without OTEL_* settings."""
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)


def resolve(**arguments: Any) -> Settings:
    """resolve_settings() with configure()'s defaults for every argument not given."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(configure).parameters.items()
    }
    return resolve_settings(**{**defaults, **arguments})


@dataclass(frozen=True)
class Sample:
    """A valid argument and variable text for one row, what each resolves to, and where to look."""

    argument: object
    text: str
    from_argument: object
    from_text: object
    read: Callable[[Settings], object]
    arguments: dict[str, object] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


SAMPLES: dict[str, Sample] = {
    "endpoint": Sample(
        "http://arg:4317", "http://env:4317", "http://arg:4317", "http://env:4317",
        lambda s: s.endpoint,
    ),
    "protocol": Sample("grpc", "HTTP/Protobuf", "grpc", "http/protobuf", lambda s: s.protocol),
    "insecure": Sample(
        False, "TRUE", False, True, lambda s: s.endpoint.startswith("http://"),
        arguments={"endpoint": "collector:4317"},
    ),
    "compression": Sample("gzip", "Deflate", "gzip", "deflate", lambda s: s.compression),
    "exporter": Sample("console", "None", "console", "none", lambda s: s.exporter),
    "sampler": Sample(
        "always_off", "always_on", "always_off", "always_on",
        lambda s: s.sampler[0],  # type: ignore[index]
    ),
    "sampler_arg": Sample(
        0.5, "0.25", 0.5, "0.25", lambda s: s.sampler[1],  # type: ignore[index]
        env={"OTEL_TRACES_SAMPLER": "traceidratio"},
    ),
    "propagator": Sample(
        _PROPAGATOR, "tracecontext", _PROPAGATOR, "tracecontext", lambda s: s.propagator
    ),
    "disabled": Sample(False, "true", False, True, lambda s: s.disabled),
    "max_queue_size": Sample(2000, "3000", 2000, 3000, lambda s: s.max_queue_size),
    "schedule_delay_millis": Sample(10, "20", 10, 20, lambda s: s.schedule_delay_millis),
    "max_export_batch_size": Sample(100, "200", 100, 200, lambda s: s.max_export_batch_size),
    "export_timeout_millis": Sample(10, "20", 10, 20, lambda s: s.export_timeout_millis),
    "max_queue_bytes": Sample(1000, "2000", 1000, 2000, lambda s: s.max_queue_bytes),
    "exit_timeout_millis": Sample(10, "20", 10, 20, lambda s: s.exit_timeout_millis),
    "max_span_bytes": Sample(1000, "2000", 1000, 2000, lambda s: s.max_span_bytes),
    "strict": Sample(False, "TRUE", False, True, lambda s: s.strict),
}  # fmt: skip


def _id(value: object) -> str:
    return value.argument if isinstance(value, Param) else str(value)


ROWS_WITH_VARIABLES = [(param, name) for param in PARAMS.values() for name in param.env]


def test_every_configure_argument_is_one_row_of_the_table() -> None:
    assert list(PARAMS) == list(inspect.signature(configure).parameters)
    assert all(param.argument == name for name, param in PARAMS.items())


def test_every_row_that_reads_a_variable_has_a_sample() -> None:
    assert {param.argument for param, _ in ROWS_WITH_VARIABLES} == set(SAMPLES)


def test_every_argument_is_documented_once_in_the_docstring() -> None:
    doc = inspect.getdoc(configure) or ""
    for name in PARAMS:
        assert len(re.findall(rf"^    {name}: \S", doc, re.MULTILINE)) == 1, name


def test_the_configuration_page_lists_every_argument_with_its_variables() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    section = page.split("\n## Arguments\n", 1)[1].split("\n## ", 1)[0]
    rows = {m[1]: m[0] for m in re.finditer(r"^\| `(\w+)`[^\n]*$", section, re.MULTILINE)}
    for param in PARAMS.values():
        row = rows[param.argument]
        for variable in (*param.env, *param.exporter_env):
            assert variable in row, (param.argument, variable)


@pytest.mark.parametrize(("param", "variable"), ROWS_WITH_VARIABLES, ids=_id)
def test_argument_beats_variable_beats_default(
    monkeypatch: pytest.MonkeyPatch, param: Param[Any], variable: str
) -> None:
    sample = SAMPLES[param.argument]
    for name, value in sample.env.items():
        monkeypatch.setenv(name, value)
    default = resolve(**sample.arguments)
    assert lookup(param) == Found(param.default, "default")

    monkeypatch.setenv(variable, f"  {sample.text} ")
    assert lookup(param) == Found(sample.from_text, variable)
    from_variable = resolve(**sample.arguments)
    assert sample.read(from_variable) == sample.from_text
    assert sample.read(from_variable) != sample.read(default)

    from_argument = resolve(**sample.arguments, **{param.argument: sample.argument})
    assert lookup(param, sample.argument) == Found(sample.from_argument, param.argument)
    assert sample.read(from_argument) == sample.from_argument


@pytest.mark.parametrize("param", [p for p in PARAMS.values() if len(p.env) > 1], ids=_id)
def test_the_first_variable_set_wins_and_blank_ones_count_as_unset(
    monkeypatch: pytest.MonkeyPatch, param: Param[Any]
) -> None:
    sample = SAMPLES[param.argument]
    first, *later = param.env
    for name in later:
        monkeypatch.setenv(name, "not a valid value ://")  # never even parsed
    monkeypatch.setenv(first, sample.text)
    assert lookup(param) == Found(sample.from_text, first)
    monkeypatch.setenv(first, "   ")
    monkeypatch.setenv(later[0], sample.text)
    assert lookup(param) == Found(sample.from_text, later[0])


#: Rows whose variable is never an error: a flag that is not "true" is false (with a warning),
#: a sampler argument is checked only by a sampler that takes one, and OTEL_PROPAGATORS names are
#: checked when configure() loads them (after resolving).
LENIENT = ("insecure", "disabled", "sampler_arg", "propagator", "strict")


@pytest.mark.parametrize(
    "param", [p for p in PARAMS.values() if p.env and p.argument not in LENIENT], ids=_id
)
def test_a_bad_variable_raises_a_value_error_that_names_it(
    monkeypatch: pytest.MonkeyPatch, param: Param[Any]
) -> None:
    variable = param.env[-1]
    monkeypatch.setenv(variable, "not a valid value ://")
    with pytest.raises(ValueError) as raised:
        resolve()
    expected = "unknown sampler" if param is _settings.SAMPLER else variable
    assert expected in str(raised.value)


@pytest.mark.parametrize("variable", [*_settings.INSECURE.env, *_settings.DISABLED.env])
def test_a_flag_variable_other_than_true_or_false_is_false_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variable: str
) -> None:
    monkeypatch.setenv(variable, "Yes")
    settings = resolve(endpoint="collector:4317")
    assert not settings.disabled
    assert settings.endpoint == "https://collector:4317"
    assert f"{variable}='yes' is not 'true' or 'false'" in caplog.text


def test_a_sampler_argument_ignores_the_variables_argument(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "2")  # invalid for traceidratio
    assert resolve(sampler="traceidratio").sampler == ("traceidratio", None)
    assert resolve(sampler="traceidratio", sampler_arg=0.1).sampler == ("traceidratio", 0.1)
    assert resolve(sampler_arg=0.1).sampler == ("traceidratio", 0.1)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        resolve()


def test_the_sampler_variables_are_read_in_one_place() -> None:
    readers = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in (
                "OTEL_TRACES_SAMPLER",
                "OTEL_TRACES_SAMPLER_ARG",
            ):
                readers.append(path.name)
    assert sorted(set(readers)) == ["sampling.py"]


@pytest.mark.parametrize(
    ("env", "description"),
    [
        ({}, DEFAULT_ON.get_description()),
        ({"OTEL_TRACES_SAMPLER": "   "}, DEFAULT_ON.get_description()),
        ({"OTEL_TRACES_SAMPLER": " traceidratio ", "OTEL_TRACES_SAMPLER_ARG": ""}, "{1.0}"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": " 0.5 "}, "{0.5}"),
    ],
)
def test_zero_code_and_configure_read_the_sampler_alike(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], description: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with configure(set_global=False, exporter="none", link_aware_sampling=False) as telemetry:
        assert description in telemetry.sampler.get_description()
        assert sampler_from_env().get_description() == telemetry.sampler.get_description()


def test_settings_are_frozen_and_equal_for_equal_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "512")
    first, second = resolve(service_name="svc"), resolve(service_name="svc", set_global=False)
    assert first == second  # set_global is not part of the comparison
    assert first.max_queue_size == 512 and first.max_export_batch_size == 512
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.endpoint = "http://elsewhere:4317"  # type: ignore[misc]
    assert resolve(service_name="other") != first


def test_the_propagator_variable_is_kept_as_names_until_configure_builds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,kilostar")
    settings = resolve()
    assert settings.propagator == "tracecontext,kilostar"
    built = _settings.build_propagator(settings)
    assert isinstance(built, TextMapPropagator)
    assert {"traceparent", "x-request-id"} <= set(built.fields)
