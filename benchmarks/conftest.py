"""Benchmark order: ``BENCH_REVERSE=1`` runs the cases in reverse, so passes alternate the order
and a machine that slows down (or speeds up) during a pass does not favour one arm."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("BENCH_REVERSE") == "1":
        items.reverse()
