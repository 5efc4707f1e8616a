"""The docs' first service, copied as is into a fresh venv with the extras it names, really works.

A new user reads the "Use it in a service" section of docs/index.md (the README shows the same),
installs what its ``pip install`` line names, saves the code as ``app.py`` and runs it under
uvicorn. The test does exactly that, with ``uv`` and the local project in place of the PyPI
release, sends the request the section shows, and checks what a back end receives (a request
trace and the linked workflow) and the log lines, in the documented format. It also checks that
the command line without the ``cli`` extra says which extra it needs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kilostar_otel.viewer import OtlpReceiver, ReceivedSpan
from tests.otlp.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")
TIMESTAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}"


def section(path: Path, title: str) -> str:
    text = path.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


SERVICE = section(ROOT / "docs" / "index.md", "Use it in a service")


def test_the_readme_shows_the_same_service_as_the_docs() -> None:
    assert section(ROOT / "README.md", "Use it in a service") == SERVICE


# --- fresh venvs -------------------------------------------------------------------------------


def install_args(pip_line: str) -> list[str]:
    """``pip install "kilostar-otel[x]" other`` -> uv arguments with the local project for ours."""
    words = shlex.split(pip_line)
    assert words[:2] == ["pip", "install"], pip_line
    args = []
    for word in words[2:]:
        match = re.fullmatch(r"kilostar-otel(\[[\w,]+\])?", word)
        args.append(f"kilostar-otel{match.group(1) or ''} @ {ROOT.as_uri()}" if match else word)
    return args


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``fresh_venv('pip install ...')``: a new venv with just that installed (from uv's cache)."""
    if not UV.is_file():
        pytest.fail(f"uv is missing next to {sys.executable} (make setup installs it)")
    made: dict[str, Path] = {}

    def make(pip_line: str) -> Path:
        if pip_line not in made:
            venv = tmp_path_factory.mktemp("venv") / ".venv"
            run = {"capture_output": True, "text": True, "timeout": 600}
            done = subprocess.run([UV, "venv", "-q", "--python", sys.executable, venv], **run)
            assert done.returncode == 0, done.stderr
            python = venv / "bin" / "python"
            done = subprocess.run(
                [UV, "pip", "install", "-q", "--python", python, *install_args(pip_line)], **run
            )
            assert done.returncode == 0, done.stderr
            made[pip_line] = venv
        return made[pip_line]

    return make


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VIRTUAL_ENV"))}
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


# --- the service -------------------------------------------------------------------------------


@pytest.fixture
def service(
    fresh_venv: Callable[[str], Path], tmp_path: Path, receiver: OtlpReceiver
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The docs' app.py under uvicorn in its fresh venv, exporting to our receiver."""
    (pip_line,) = [line for line in blocks(SERVICE, "bash") if line.startswith("pip install")]
    (code,) = blocks(SERVICE, "python")
    venv = fresh_venv(pip_line.strip())
    (tmp_path / "app.py").write_text(code, encoding="utf-8")
    port = free_port()
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{receiver.grpc_endpoint}")
    server = subprocess.Popen(
        [venv / "bin" / "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[1]
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "uvicorn did not start within 60 s"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", server
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def documented_log_lines() -> list[str]:
    (output,) = [b for b in blocks(SERVICE, "text") if "[request_id=" in b]
    return output.splitlines()


def expected_line(documented: str, values: dict[str, str]) -> re.Pattern[str]:
    """The documented line with its sample ids replaced by this run's and any timestamp."""
    timestamp = re.match(TIMESTAMP, documented)
    assert timestamp is not None, documented
    rest = documented[timestamp.end() :]
    for key, value in values.items():
        rest, found = re.subn(rf"\b{key}=[^\s\]]*", f"{key}={value}", rest)
        assert found == 1, (key, documented)
    return re.compile(TIMESTAMP + re.escape(rest))


def test_the_service_from_the_docs_runs_in_a_fresh_venv(
    service: tuple[str, subprocess.Popen[str]], receiver: OtlpReceiver
) -> None:
    url, server = service
    request = urllib.request.Request(
        f"{url}/chat", method="POST", headers={"X-Request-Id": "req-1"}, data=b""
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["x-request-id"] == "req-1"
        body = json.loads(response.read())
    assert body["request_id"] == "req-1"
    assert re.fullmatch(r"[0-9a-f]{32}", body["trace_id"])

    server.send_signal(signal.SIGINT)  # uvicorn's graceful stop; configure() flushes at exit
    _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr

    def named(name: str) -> ReceivedSpan:
        deadline = time.monotonic() + 15
        while not (found := [s for s in receiver.spans() if s.name == name]):
            assert time.monotonic() < deadline, [s.name for s in receiver.spans()]
            time.sleep(0.1)
        (span,) = found
        return span

    # The request trace: the server span, with the request id.
    server_span = named("POST /chat")
    assert server_span.kind == "SERVER"
    assert server_span.attributes["kilostar.request_id"] == "req-1"
    assert server_span.resource["service.name"] == "chat-api"
    # The workflow: its own trace, whose id is the trace_id handed out, linked to the request.
    root = named("invoke_workflow plan")
    assert root.is_root and root.trace_id == body["trace_id"] != server_span.trace_id
    assert (server_span.trace_id, server_span.span_id) in root.links
    assert root.attributes["kilostar.request_id"] == "req-1"
    assert root.attributes["kilostar.trace_id"] == body["trace_id"]

    # The log lines, in the documented format, with this run's ids.
    logged = [line for line in stderr.splitlines() if "[request_id=" in line]
    first, second = documented_log_lines()
    values = [
        {
            "request_id": "req-1",
            "trace_id": "",
            "otel_trace_id": server_span.trace_id,
            "otel_span_id": server_span.span_id,
        },
        {
            "request_id": "req-1",
            "trace_id": root.trace_id,
            "otel_trace_id": root.trace_id,
            "otel_span_id": root.span_id,
        },
    ]
    assert len(logged) == 2, stderr
    for line, documented, ids in zip(logged, (first, second), values, strict=True):
        assert expected_line(documented, ids).fullmatch(line), (line, documented)


# --- the command line without its extra ----------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_the_command_line_without_the_cli_extra_names_it(
    fresh_venv: Callable[[str], Path], command: str
) -> None:
    venv = fresh_venv("pip install kilostar-otel")
    done = subprocess.run(
        [venv / "bin" / "kilostar-otel", command],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"kilostar-otel {command}: error: {command} needs the cli extra")
    assert "pip install 'kilostar-otel[cli]'" in done.stderr


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx
