"""Fixtures for the hostile-input tests: the integration tests' real servers, reused as they are."""

from __future__ import annotations

from tests.integrations.conftest import (  # noqa: F401 - re-exported as fixtures for this directory
    global_propagator,
    serve_asgi,
    serve_wsgi,
    stdlib_logs,
)
from tests.otlp.conftest import receiver  # noqa: F401 - the embedded OTLP receiver fixture
