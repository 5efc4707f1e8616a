"""gunicorn settings for the fork tests: OpenTelemetry's recipe, configure() again in post_fork."""

from __future__ import annotations

import os
from typing import Any

import kilostar_otel

graceful_timeout = 20


def post_fork(server: Any, worker: Any) -> None:
    """What OpenTelemetry's gunicorn docs recommend; here the app also configured at import."""
    if os.environ.get("POST_FORK_CONFIGURE") == "1":
        kilostar_otel.configure(os.environ["APP_SERVICE"], schedule_delay_millis=100)
