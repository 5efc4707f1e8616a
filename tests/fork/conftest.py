"""Fixtures for the fork tests: the OTLP tests' receiver, reused as it is."""

from __future__ import annotations

from tests.otlp.conftest import receiver  # noqa: F401 - re-exported as a fixture for this directory
