"""Exit with the back end down, run in a fresh interpreter by test_exit.py.

``python exit_app.py ENDPOINT PROTOCOL SPANS [EXIT_TIMEOUT_MILLIS]``: configures the global
pipeline, ends SPANS spans (the back end never answers, so they stay queued or in a hanging
export), prints ``ready`` and returns: the interpreter exits through the at-exit flush.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from opentelemetry import trace

import kilostar_otel


def main(endpoint: str, protocol: str, spans: int, exit_timeout: str | None) -> None:
    kilostar_otel.configure(
        "exit-test",
        endpoint=endpoint,
        protocol=protocol,  # type: ignore[arg-type]
        schedule_delay_millis=50,
        exit_timeout_millis=int(exit_timeout) if exit_timeout else None,
    )
    tracer = trace.get_tracer("exit")
    for n in range(spans):
        tracer.start_span(f"s{n}").end()
    print("ready", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
