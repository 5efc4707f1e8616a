"""pytest-benchmark micro-benchmarks: every case of ``cases.py`` (run by ``python -m benchmarks``).

Run alone with ``python -m pytest benchmarks/bench_micro.py``; add ``--benchmark-disable`` for a
smoke run that calls each arm once.
"""

from __future__ import annotations

import pytest

from benchmarks.cases import CASES, Case


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_micro(benchmark: pytest.FixtureRequest, case: Case) -> None:
    arm = case.build()
    try:
        benchmark.group = case.group  # type: ignore[attr-defined]
        benchmark.extra_info.update(  # type: ignore[attr-defined]
            {"group": case.group, "case": case.name, "role": case.role}
        )
        benchmark(arm.run)  # type: ignore[operator]
        arm.check()
    finally:
        arm.close()
