"""``python -m benchmarks``: run every benchmark, print the table, write docs/benchmarks.md.

Micro-benchmarks run with pytest-benchmark in separate interpreters, ``--passes`` short passes
in alternating order (ratios are taken within a pass, where the arms of a group run moments
apart); the export-capacity run, the whole-application benchmark (``bench_app.py``) and the Ray
benchmark (``bench_ray.py``) follow, each in its own interpreters. ``--quick`` is a short run
(one pass, short timings, the smoke settings of each) for checking the tooling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import CHART_NAME, build_report, render_markdown, render_text, write_chart

ROOT = Path(__file__).resolve().parent.parent


def _environment() -> dict[str, str]:
    """This environment without OTEL_* variables: every arm runs with its library defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def run_micro(out: Path, passes: int, quick: bool) -> list[list[dict[str, Any]]]:
    """Run ``bench_micro.py`` ``passes`` times; the ``benchmarks`` list of each pass's JSON."""
    timing = (
        ["--benchmark-max-time=0.02", "--benchmark-min-rounds=3", "--benchmark-warmup=off"]
        if quick
        else [
            "--benchmark-max-time=0.2",
            "--benchmark-min-rounds=50",
            "--benchmark-warmup=on",
            "--benchmark-warmup-iterations=500",
        ]
    )
    results = []
    for n in range(passes):
        path = out / f"micro-{n}.json"
        env = _environment()
        env["BENCH_REVERSE"] = "1" if n % 2 else "0"
        print(f"micro-benchmarks, pass {n + 1}/{passes} ...", file=sys.stderr, flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                str(ROOT / "benchmarks" / "bench_micro.py"),
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "addopts=",
                "--benchmark-only",
                f"--benchmark-json={path}",
                "--benchmark-columns=median,iqr,rounds",
                *timing,
            ],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL if not quick else None,
        )
        results.append(json.loads(path.read_text())["benchmarks"])
    return results


def run_capacity(out: Path, quick: bool) -> dict[str, Any]:
    """Run ``benchmarks.capacity`` in a fresh interpreter; its results."""
    path = out / "capacity.json"
    print("export capacity ...", file=sys.stderr, flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.capacity",
            "--json",
            str(path),
            *(["--quick"] if quick else []),
        ],
        cwd=ROOT,
        env=_environment(),
        check=True,
    )
    return dict(json.loads(path.read_text()))


def run_module(module: str, out: Path, quick: bool, what: str) -> dict[str, Any]:
    """Run ``benchmarks.<module>`` (which takes ``--json`` and ``--quick``) in a fresh
    interpreter; its results."""
    path = out / f"{module}.json"
    print(f"{what} ...", file=sys.stderr, flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            f"benchmarks.{module}",
            "--json",
            str(path),
            *(["--quick"] if quick else []),
        ],
        cwd=ROOT,
        env=_environment(),
        check=True,
    )
    return dict(json.loads(path.read_text()))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the page; exit 0 even when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--passes", type=int, default=12, help="micro-benchmark passes (12)")
    parser.add_argument("--quick", action="store_true", help="a short run to check the tooling")
    parser.add_argument("--no-capacity", action="store_true", help="skip the export capacity")
    parser.add_argument("--no-app", action="store_true", help="skip the whole application")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray calls")
    parser.add_argument(
        "--docs", type=Path, default=ROOT / "docs", help="where benchmarks.md and the chart go"
    )
    parser.add_argument("--json", type=Path, help="also keep the raw results (a directory)")
    args = parser.parse_args(argv)
    passes = 1 if args.quick else max(1, args.passes)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kilostar-bench-") as tmp:
        out = args.json or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        micro = run_micro(out, passes, args.quick)
        capacity = None if args.no_capacity else run_capacity(out, args.quick)
        app = None if args.no_app else run_module("bench_app", out, args.quick, "application")
        ray = None if args.no_ray else run_module("bench_ray", out, args.quick, "Ray calls")
    report = build_report(micro, capacity, app, ray)
    args.docs.mkdir(parents=True, exist_ok=True)
    write_chart(report, args.docs / CHART_NAME)
    (args.docs / "benchmarks.md").write_text(render_markdown(report))
    print(render_text(report))
    print(
        f"\nwrote {args.docs / 'benchmarks.md'} and {args.docs / CHART_NAME} "
        f"in {time.monotonic() - began:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
