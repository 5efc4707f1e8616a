"""A process that exports over gRPC, then starts a program the way Ray starts its own processes
(``subprocess.Popen`` with a ``preexec_fn``: Python's at-fork hooks run in the child before it
execs). ``python spawn_app.py <grpc endpoint>``; prints one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys

import kilostar_otel

telemetry = kilostar_otel.configure("spawner", endpoint=sys.argv[1], protocol="grpc")
tracer = telemetry.get_tracer("spawner")
for _ in range(10):
    tracer.start_span("before the spawn").end()
flushed = telemetry.force_flush()
codes, outs = [], set()
for _ in range(10):  # the crash this guards against did not happen every time
    child = subprocess.Popen(
        [sys.executable, "-c", "print('child ran')"],
        preexec_fn=lambda: None,
        stdout=subprocess.PIPE,
    )
    out, _ = child.communicate(timeout=60)
    codes.append(child.returncode)
    outs.add(out.decode())
print(json.dumps({"flushed": flushed, "returncodes": codes, "children": sorted(outs)}))
