"""Smoke runs of every benchmark (a few iterations, no timing asserted) and of ``make bench``.

Each arm must really do what its benchmark claims (``Arm.check``), so a benchmark can never
silently time an arm that does nothing; the whole runner must produce its table, page and chart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.capacity import Settings, run
from benchmarks.cases import CASES, GROUPS, Case
from benchmarks.report import build_report, render_markdown, render_text, write_chart

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_every_arm_runs_and_does_its_job(case: Case) -> None:
    arm = case.build()
    try:
        for _ in range(5):
            arm.run()
        arm.check()
    finally:
        arm.close()


def test_every_group_has_ours_and_the_arms_its_targets_name() -> None:
    for key, group in GROUPS.items():
        names = {c.name: c.role for c in CASES if c.group == key}
        assert list(names.values()).count("ours") == 1, key
        for target in group.targets:
            assert target.other in names, (key, target.other)


def test_capacity_smoke_delivers_every_span_at_low_rates_and_is_reported(tmp_path: Path) -> None:
    results = run(Settings.quick(), quiet=True)
    ladder = results["ladder"]
    assert {row["arm"] for row in ladder} == {"sdk_default", "kilostar"}
    for row in ladder:
        assert row["delivered"] == row["produced"] > 0, row
        if row["arm"] == "kilostar":
            assert row["counted_drops"] == 0
    assert all(rate > 0 for rate in results["zero_drop_rate"].values())
    for arm, row in results["tight"].items():
        assert row["delivered"] == row["produced"] == 2_000, arm
    for arm, memory in results["memory"].items():
        assert memory["spans"] == 5_000, arm
        assert memory["rss_before"] > 0
    assert results["memory"]["kilostar"]["counted_drops"] == 0
    # The long loop: every arm ran its two segments, taking turns; every span was counted.
    for memory in results["memory"].values():
        assert len(memory["segments"]) == 2 and all(s > 0 for s in memory["segments"])
    assert results["memory"]["kilostar"]["delivered"] == 5_000
    # The report shows it: the capacity table, the targets, and the chart's two capacity panels.
    report = build_report([], results)
    text = render_text(report)
    assert "Zero-drop paced rate" in text
    assert "zero-drop paced rate vs SDK default" in text
    assert "resident memory growth over 5,000 spans" in text
    assert "tight loop of 5,000 spans: lost" in text
    assert "tight loop rate vs the same loop with export disabled" in text
    page = render_markdown(report)
    assert "## Export capacity" in page
    assert page.count("| sdk_default |") == len([r for r in ladder if r["arm"] == "sdk_default"])
    write_chart(report, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_runner_quick_writes_the_table_page_and_chart(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--no-capacity",
            "--no-app",
            "--no-ray",
            "--docs",
            str(tmp_path / "docs"),
            "--json",
            str(tmp_path / "raw"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The table: every arm with a median, and the targets.
    for case in CASES:
        assert case.label in done.stdout, case.key
    assert "Targets:" in done.stdout
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    for group in GROUPS.values():
        assert group.title in page
    assert "](benchmarks.png)" in page
    chart = (tmp_path / "docs" / "benchmarks.png").read_bytes()
    assert chart.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(chart) > 10_000
    micro = json.loads((tmp_path / "raw" / "micro-0.json").read_text())
    assert {b["extra_info"]["case"] for b in micro["benchmarks"]} == {c.name for c in CASES}
    assert all(b["stats"]["median"] > 0 for b in micro["benchmarks"])
