"""Run the official W3C Trace Context test suite against our service (``make w3c``).

Starts ``tools/w3c/service.py`` under uvicorn on a free loopback port, runs the suite's
``test/test.py`` (``SPEC_LEVEL=2 STRICT_LEVEL=2`` unless set) with its harness on another free
loopback port, stops the service by pid, and exits with the suite's status.

    python -m tools.w3c.run /path/to/trace-context
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the service did not start listening in time")


def main(argv: list[str]) -> int:
    """Run the suite found at ``argv[0]`` (the repository root or its ``test`` folder)."""
    if not argv:
        print("usage: python -m tools.w3c.run W3C_TRACE_CONTEXT_DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    suite = root / "test" if (root / "test" / "test.py").is_file() else root
    if not (suite / "test.py").is_file():
        print(f"no test/test.py under {root}", file=sys.stderr)
        return 2
    repo = Path(__file__).resolve().parents[2]
    port, harness_port = _free_port(), _free_port()
    service = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tools.w3c.service", str(port)], cwd=repo
    )
    try:
        _wait_listening(port, service)
        env = {
            **os.environ,
            "SPEC_LEVEL": os.environ.get("SPEC_LEVEL", "2"),
            "STRICT_LEVEL": os.environ.get("STRICT_LEVEL", "2"),
            "HARNESS_HOST": "127.0.0.1",
            "HARNESS_PORT": str(harness_port),
            "SERVICE_ENDPOINT": f"http://127.0.0.1:{port}/test",
        }
        suite_run = subprocess.run([sys.executable, "test.py"], cwd=suite, env=env, check=False)
        return suite_run.returncode
    finally:
        service.terminate()
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
