"""Smoke run of the Ray benchmark (``benchmarks/bench_ray.py``): a few calls per arm on its own
local cluster; every traced call's span arrives, and the report shows the arms and targets.
No timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.bench_ray import ARMS, ROUND, SERVICES, Settings, run, summary
from benchmarks.report import build_report, render_markdown, render_text, write_chart

pytestmark = pytest.mark.ray


def test_a_quick_ray_run_times_every_arm_and_delivers_the_traced_spans(tmp_path: Path) -> None:
    assert sorted(ROUND) == sorted(ARMS)  # a round calls every arm once
    settings = Settings.quick()
    results = run(settings, quiet=True)
    calls = settings.warmup + settings.blocks * settings.calls
    assert results["made"] == dict.fromkeys(ARMS, calls)
    for arm in ARMS:
        assert [len(block) for block in results["times"][arm]] == [settings.calls]
    # The arms that promise delivery delivered every span; the no-flush arm is only reported.
    assert results["delivered"]["traced_actor"] == calls
    assert results["delivered"]["traced_actor_arg"] == calls
    assert results["delivered"]["traced_task"] == calls
    assert set(results["delivered"]) == set(SERVICES)
    brief = summary(results)
    assert all(brief["medians"][arm] > 0 for arm in ARMS)
    report = build_report([], None, ray=results)
    text = render_text(report)
    assert "Ray calls" in text
    assert "8. spans of traced Ray calls delivered" in text
    page = render_markdown(report)
    assert "## Ray calls" in page
    write_chart(report, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
