"""OTLP/JSON lines: hex ids per the OTLP spec, lossless, and accepted by a third-party collector."""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf.json_format import ParseDict
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from kilostar_otel import KiloStarSpanProcessor, request_id_scope, workflow
from kilostar_otel.viewer import OtlpReceiver, ReceivedSpan
from kilostar_otel.viewer.otlp_json import OtlpJsonLinesWriter, to_otlp_json

HEX32 = "[0-9a-f]{32}"
HEX16 = "[0-9a-f]{16}"


def make_spans(provider: TracerProvider, receiver: OtlpReceiver) -> None:
    tracer = provider.get_tracer("json-test")
    with request_id_scope("req-json"), tracer.start_as_current_span("POST /plan"):
        with workflow("plan", tracer_provider=provider):
            with tracer.start_as_current_span("step"):
                pass
    receiver.wait_for_spans(3)


def spans_of(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            yield from scope_spans["spans"]


def test_lines_use_hex_ids_integer_enums_and_camel_case(
    otlp_provider: TracerProvider, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    make_spans(otlp_provider, receiver)
    path = tmp_path / "spans.jsonl"
    with OtlpJsonLinesWriter(path) as writer:
        for request in receiver.requests:
            writer.write(request)

    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == writer.lines == len(receiver.requests)
    written = [span for line in lines for span in spans_of(json.loads(line))]
    received = {(s.trace_id, s.span_id, s.parent_span_id, s.links) for s in receiver.spans()}
    assert {
        (
            s["traceId"],
            s["spanId"],
            s.get("parentSpanId", ""),
            tuple((ln["traceId"], ln["spanId"]) for ln in s.get("links", [])),
        )
        for s in written
    } == received
    for span in written:
        assert re.fullmatch(HEX32, span["traceId"]) and re.fullmatch(HEX16, span["spanId"])
        assert isinstance(span["kind"], int)
        assert span["startTimeUnixNano"].isdigit()


def test_a_line_converts_back_to_the_exact_request(
    otlp_provider: TracerProvider, receiver: OtlpReceiver
) -> None:
    make_spans(otlp_provider, receiver)

    def unhex(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: base64.b64encode(bytes.fromhex(v)).decode()
                if k in ("traceId", "spanId", "parentSpanId")
                else unhex(v)
                for k, v in node.items()
            }
        return [unhex(v) for v in node] if isinstance(node, list) else node

    for request in receiver.requests:
        back = ParseDict(unhex(to_otlp_json(request)), ExportTraceServiceRequest())
        assert back == request


def test_rotel_accepts_the_lines_as_otlp_json_and_forwards_the_same_spans(
    receiver: OtlpReceiver, rotel_to: str
) -> None:
    with OtlpReceiver() as source:
        provider = TracerProvider()
        provider.add_span_processor(KiloStarSpanProcessor())
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=source.grpc_endpoint, insecure=True))
        )
        make_spans(provider, source)
        provider.shutdown()

    for request in source.requests:
        post = urllib.request.Request(
            rotel_to,
            data=json.dumps(to_otlp_json(request)).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=10) as response:  # loopback only
            assert response.status == 200

    def key(s: ReceivedSpan) -> tuple[object, ...]:
        return (s.trace_id, s.span_id, s.parent_span_id, s.links, s.name, s.attributes)

    arrived = receiver.wait_for_spans(len(source.spans()))
    assert sorted(map(key, arrived), key=str) == sorted(map(key, source.spans()), key=str)
