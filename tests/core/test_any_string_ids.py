"""Ids of any string: bound exactly, carried in baggage on HTTP, never written to the header.

A request id bound in this process is trusted as the seed trusted it; only the wire is policed.
Such an id travels percent-encoded in the ``baggage`` entry ``kilostar.request_id``, the
``X-Request-Id`` header is left out for it, and one warning per process says why. Incoming ids
stay validated: a receiver treats an id that fails the policy as absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from opentelemetry.baggage.propagation import W3CBaggagePropagator

import kilostar_otel
from kilostar_otel import get_request_id, request_id_scope

ROOT = Path(__file__).resolve().parents[2]
ODD = "请求 #1; a=b,c ü"


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_on_http_the_id_travels_in_baggage_the_header_is_left_out_and_one_warning_says_why() -> (
    None
):
    done = run(
        f"""
        import json, logging
        import kilostar_otel
        logging.basicConfig(format="%(levelname)s %(name)s %(message)s")
        kilostar_otel.set_global()  # tracecontext + baggage + kilostar
        carriers = []
        for _ in range(3):
            with kilostar_otel.request_id_scope({ODD!r}):
                carriers.append(kilostar_otel.inject({{}}))
        print(json.dumps(carriers))
        """
    )
    assert done.returncode == 0, done.stderr
    carriers = json.loads(done.stdout)
    for carrier in carriers:
        assert "x-request-id" not in carrier
        value = carrier["baggage"]  # one member, percent-encoded: nothing that could split it
        assert value.startswith("kilostar.request_id=") and value.isascii()
        assert not set(value) & set(' ,;"\\\r\n')
        # Any W3C baggage reader gets the exact id back.
        decoded = W3CBaggagePropagator().extract(carrier)
        assert dict(decoded.get(next(iter(decoded)), {})) == {"kilostar.request_id": ODD}
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, done.stderr
    assert "kilostar_otel" in warnings[0] and "x-request-id" in warnings[0]


def test_incoming_ids_stay_validated() -> None:
    propagator = kilostar_otel.default_propagator()
    carrier: dict[str, str] = {}
    with request_id_scope(ODD):
        propagator.inject(carrier)
    assert get_request_id(propagator.extract(carrier)) == ""  # fails the policy: absent
    carrier = {}
    with request_id_scope("req-ok"):
        propagator.inject(carrier)
    assert carrier["x-request-id"] == "req-ok"
    assert get_request_id(propagator.extract(carrier)) == "req-ok"


def test_a_workflow_without_an_sdk_provider_warns_once() -> None:
    done = run(
        """
        import logging
        import kilostar_otel
        logging.basicConfig(format="%(levelname)s %(name)s %(message)s")
        ids = []
        for name in ("a", "b"):
            with kilostar_otel.workflow(name) as wf:
                ids.append(kilostar_otel.get_trace_id() == wf.trace_id)
        print(ids)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True, True]"  # the ids still work
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, done.stderr
    assert "workflow('a')" in warnings[0] and "recorded nowhere" in warnings[0]


def test_the_token_type_checks_as_contextvars_token(tmp_path: Path) -> None:
    code = tmp_path / "uses_tokens.py"
    code.write_text(
        textwrap.dedent(
            """
            from contextvars import Token

            from kilostar_otel import bind_request_id, bind_trace_id, reset_request_id


            def seed_style() -> Token:  # the seed's own annotation
                return bind_trace_id("t")


            token: Token[str] = bind_request_id("req-1")
            print(token.old_value)
            token.var.reset(token)
            reset_request_id(bind_request_id("req-2"))
            seed_style()
            """
        ),
        encoding="utf-8",
    )
    # The seed's code was not --strict (a bare ``Token``); run mypy on it as such, without the
    # project's own config, against this checkout's package.
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--python-version", "3.10", str(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stdout


def test_a_workflow_started_before_the_sdk_provider_records_once_it_is_set() -> None:
    done = run(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import kilostar_otel

        with kilostar_otel.workflow("early"):
            pass
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        with kilostar_otel.workflow("late") as wf:
            pass
        (root,) = exporter.get_finished_spans()
        print(root.name, f"{root.context.trace_id:032x}" == wf.trace_id)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "invoke_workflow late True"
