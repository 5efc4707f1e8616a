"""The command line's help and argument errors: complete help, one-line errors, exit status 2."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from kilostar_otel.cli import build_parser, main


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def options_of(parser: argparse.ArgumentParser) -> list[str]:
    return [opt for action in parser._actions for opt in action.option_strings]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(group.choices)


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["--help"], capsys)
    assert code == 0 and err == ""
    assert "usage: kilostar-otel" in out
    for name in subparsers():
        assert name in out


@pytest.mark.parametrize("command", ["demo", "serve"])
def test_each_commands_help_documents_every_option(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main([command, "--help"], capsys)
    assert code == 0
    assert f"usage: kilostar-otel {command}" in out
    parser = subparsers()[command]
    for action in parser._actions:
        assert action.help, f"{command} {action.option_strings} has no help"
        for option in action.option_strings:
            assert option in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from kilostar_otel import __version__

    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and out.strip() == f"kilostar-otel {__version__}"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "required: COMMAND"),
        (["nope"], "invalid choice: 'nope'"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["demo", "--otlp-endpoint", "localhost:4317"], "expected http(s)://HOST:PORT"),
        (["demo", "--otlp-endpoint", "ftp://collector:4317"], "expected http(s)://HOST:PORT"),
        (["demo", "--otlp-endpoint", "http://collector:99999"], "not a valid URL"),
        (["demo", "--otlp-endpoint", "http://collector:0"], "port 0"),
        (["demo", "--otlp-endpoint", "http://u:p@collector:4317"], "no credentials"),
        (["demo", "--otlp-endpoint"], "expected one argument"),
        (["demo", "--protocol", "thrift"], "invalid choice: 'thrift'"),
        (["serve", "--grpc-port", "70000"], "port out of range"),
        (["serve", "--http-port", "http"], "not a port number"),
        (["serve", "--settle", "-1"], "seconds out of range"),
        (["serve", "--max-wait", "soon"], "not a number of seconds"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n"), repr(err)
    assert err.startswith("kilostar-otel")
    assert ": error: " in err
    assert fragment in err


def test_the_installed_console_script_runs_the_same_cli() -> None:
    script = [sys.executable, "-m", "kilostar_otel.cli"]
    ok = subprocess.run([*script, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "--grpc-port" in ok.stdout
    bad = subprocess.run([*script, "serve", "--nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        "kilostar-otel serve: error: unrecognized arguments: --nope "
        "(try 'kilostar-otel serve --help')"
    ]
