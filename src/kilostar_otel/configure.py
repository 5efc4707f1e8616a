"""``configure()``: one call to set up tracing, export and propagation (see issue #4)."""

from __future__ import annotations

from typing import Any


def configure(**kwargs: Any) -> Any:
    """Not available yet."""
    raise NotImplementedError("configure() arrives with the OTLP export work")
