"""Smoke runs of the whole-application benchmark (``benchmarks/bench_app.py``); no timing asserted.

Each arm runs in its own process, as in the benchmark, exporting to a receiver in this process,
so the test can check that every arm really makes the spans the benchmark claims: the same span
set in every arm, each workflow a new trace linked to its request, and the request id on every
span of the arms that carry one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from benchmarks.bench_app import ARMS, CHILDREN, Settings, order, run, run_pass
from benchmarks.report import build_report, render_markdown, render_text, write_chart

from kilostar_otel.viewer import OtlpReceiver

TINY = Settings(passes=1, requests=6, warmup=2, round=4)  # two rounds: 4 and 2 requests
#: Where each arm keeps the request id on its spans (plain OTel has none).
REQUEST_ID_ATTRIBUTE = {
    "kilostar": "kilostar.request_id",
    "logfire": "request_id",
    "correlation": "request_id",
}


@pytest.mark.parametrize("arm", ARMS)
def test_every_arm_makes_the_same_spans_and_delivers_them(arm: str) -> None:
    with OtlpReceiver() as receiver:
        row = run_pass([arm], receiver.grpc_endpoint, TINY, "smoke")[arm]
        assert row["answered"] == TINY.requests + TINY.warmup
        assert row["created"] == row["expected"] == 4 * 4 + 4 * 7
        spans = receiver.wait_for_spans(row["created"], timeout=20)
    assert len(spans) == row["created"]
    assert {s.resource["service.name"] for s in spans} == {f"app-{arm}-smoke"}
    names = Counter(s.name for s in spans)
    servers = [s for s in spans if s.kind == "SERVER"]
    assert len(servers) == 8, names
    for child in CHILDREN:
        assert sum(child in name for name in names.elements()) == 8, names
    roots = [s for s in spans if "workflow" in s.name]
    assert len(roots) == 4, names
    by_id = {s.span_id: s for s in spans}
    for root in roots:
        # A new trace, linked to the server span of its request.
        assert root.is_root
        assert len(root.links) >= 1
        linked = by_id[root.links[0][1]]
        assert linked.kind == "SERVER"
        assert linked.trace_id != root.trace_id
        steps = [s for s in spans if s.parent_span_id == root.span_id]
        assert sorted(s.name for s in steps) == ["step 1", "step 2"]
    attribute = REQUEST_ID_ATTRIBUTE.get(arm)
    if attribute is None:
        return
    for server in servers:
        request_id = server.attributes.get(attribute)
        assert request_id, (arm, server.attributes)
        same_request = [
            s
            for s in spans
            if s.trace_id == server.trace_id
            or any(link[1] == server.span_id for link in s.links)
            or s.trace_id
            in {r.trace_id for r in roots if any(link[1] == server.span_id for link in r.links)}
        ]
        assert {s.attributes.get(attribute) for s in same_request} == {request_id}, arm


def test_the_order_alternates_and_rotates() -> None:
    orders = order(4)
    assert all(sorted(o) == sorted(ARMS) for o in orders)
    assert orders[1] == orders[0][::-1]
    assert orders[2][0] != orders[0][0]


def test_a_quick_run_is_reported_with_its_targets(tmp_path: Path) -> None:
    results = run(TINY, quiet=True)
    rows = results["rows"]
    assert sorted(r["arm"] for r in rows) == sorted(ARMS)
    assert all(r["lossless"] for r in rows), rows
    report = build_report([], None, app=results)
    text = render_text(report)
    assert "Whole application" in text
    assert "request-thread CPU vs plain OpenTelemetry by hand" in text
    page = render_markdown(report)
    assert "## Whole application" in page
    for arm in ARMS:
        assert f"| {arm} |" in page or arm in page
    write_chart(report, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
