"""Ray calls: what a traced call costs next to a plain Ray call, and that every span arrives.

A local Ray cluster (2 CPUs, on 127.0.0.1) whose workers run ``setup_worker`` and export over
OTLP/gRPC to the embedded receiver in its own process, which counts spans per ``service.name``.
The driver runs ``configure()`` and makes every call inside a request and a workflow, as an
application would. The arms, each an actor method or task that does nothing (so the difference
is all tracing):

- ``plain_actor`` / ``plain_task``: ``ray.remote``;
- ``plain_actor_ctx`` / ``plain_task_ctx``: ``ray.remote`` on a method or function that takes
  the ``_kilostar_ctx`` keyword, called with ``snapshot()`` and no tracing: what Ray charges for
  carrying the context in the call (a call with no argument at all skips Ray's argument
  handling), the floor for any tracing that rides on the call's arguments;
- ``traced_actor`` / ``traced_task``: ``kilostar_otel.integrations.ray.remote`` with its
  defaults (``KILOSTAR_OTEL_RAY_FLUSH=idle``: spans are exported once the worker has been idle
  for a moment, before Ray could reap it, and on a graceful exit);
- ``plain_actor_arg`` / ``traced_actor_arg``: the same plain and traced actor calls with one
  positional string argument, as most calls have: the snapshot is then a second argument;
- ``traced_actor_after``: ``KILOSTAR_OTEL_RAY_FLUSH=after``: the export starts when the call
  ends and runs while the result goes back, off the caller's path;
- ``traced_actor_wait``: ``KILOSTAR_OTEL_RAY_FLUSH=wait``: the call waits until its spans are
  exported (delivered even if the worker is killed the moment the result arrives);
- ``traced_actor_no_flush``: the same with ``KILOSTAR_OTEL_RAY_FLUSH_TIMEOUT=0`` (spans left to
  the batch processor: the floor for any delivery scheme).

Calls are sequential (``ray.get(x.remote())``) and timed one by one, in runs of a few calls per
arm, one run per arm in a round (the order reversed every other round), so a change in the
machine's speed reaches every arm alike while each arm's calls still follow each other. A block
of rounds gives each arm's median, a block's ratio is median(traced) / median(plain), and the
ratio reported is the median over the blocks. After the timing, every
traced call's span is counted at the receiver. ``python -m benchmarks.bench_ray --json out.json``
runs it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.capacity import write_results

__all__ = ["ARMS", "PAIRS", "ROUND", "Settings", "run"]

ARMS = (
    "plain_actor",
    "plain_actor_ctx",
    "traced_actor",
    "plain_actor_arg",
    "traced_actor_arg",
    "traced_actor_after",
    "traced_actor_wait",
    "traced_actor_no_flush",
    "plain_task",
    "plain_task_ctx",
    "traced_task",
)
#: The order of a round. The ``after`` arm exports as its last call returns: its neighbours in
#: either direction (the rounds alternate) are itself and arms no target is about.
ROUND = (
    "plain_actor",
    "plain_actor_ctx",
    "traced_actor",
    "plain_actor_arg",
    "traced_actor_arg",
    "plain_task",
    "plain_task_ctx",
    "traced_task",
    "traced_actor_no_flush",
    "traced_actor_wait",
    "traced_actor_after",
)
#: (traced arm, its plain baseline): the ratios reported.
PAIRS = (
    ("plain_actor_ctx", "plain_actor"),
    ("traced_actor", "plain_actor"),
    ("traced_actor_arg", "plain_actor_arg"),
    ("traced_actor_after", "plain_actor"),
    ("traced_actor_wait", "plain_actor"),
    ("traced_actor_no_flush", "plain_actor"),
    ("plain_task_ctx", "plain_task"),
    ("traced_task", "plain_task"),
)
LABELS = {
    "plain_actor": "plain Ray actor call",
    "plain_actor_ctx": "plain Ray actor call carrying a snapshot (one keyword argument)",
    "traced_actor": "traced actor call (defaults: export when idle)",
    "plain_actor_arg": "plain Ray actor call with one argument",
    "traced_actor_arg": "traced actor call with one argument (defaults)",
    "traced_actor_after": "traced actor call, KILOSTAR_OTEL_RAY_FLUSH=after",
    "traced_actor_wait": "traced actor call, KILOSTAR_OTEL_RAY_FLUSH=wait",
    "traced_actor_no_flush": "traced actor call, KILOSTAR_OTEL_RAY_FLUSH_TIMEOUT=0",
    "plain_task": "plain Ray task",
    "plain_task_ctx": "plain Ray task carrying a snapshot (one keyword argument)",
    "traced_task": "traced task (kilostar-otel defaults)",
}
#: ``service.name`` of the workers of each traced arm (counted at the receiver).
SERVICES = {
    "traced_actor": "ray-bench-traced-actor",
    "traced_actor_arg": "ray-bench-traced-arg",
    "traced_actor_after": "ray-bench-traced-after",
    "traced_actor_wait": "ray-bench-traced-wait",
    "traced_actor_no_flush": "ray-bench-no-flush",
    "traced_task": "ray-bench-traced-task",
}
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Blocks; calls per arm and block, in runs of ``run`` calls; warm-up calls per arm."""

    blocks: int = 20
    calls: int = 50
    run: int = 10
    warmup: int = 30

    @classmethod
    def quick(cls) -> Settings:
        """A smoke run: one short block."""
        return cls(blocks=1, calls=5, run=5, warmup=3)


def noop() -> None:
    """The task: nothing, so a call costs what Ray and tracing cost."""


def noop_ctx(_kilostar_ctx: object = None) -> None:
    """The task that takes the snapshot keyword and does nothing with it."""


class Echo:
    """The actor: a method that does nothing."""

    def noop(self) -> None:
        """Nothing."""

    def one(self, item: str) -> None:
        """Nothing, with one argument."""


class EchoCtx:
    """The actor whose method takes the snapshot keyword and does nothing with it."""

    def noop(self, _kilostar_ctx: object = None) -> None:
        """Nothing."""


def _arms(endpoint: str) -> dict[str, Callable[[], Any]]:
    """Build every arm on the running cluster; each value makes one call and returns its ref."""
    import ray

    from kilostar_otel import snapshot
    from kilostar_otel.integrations import ray as kray

    def env(service: str, **extra: str) -> dict[str, Any]:
        return {"env_vars": {kray.SERVICE_NAME_ENV: service, **extra}}

    plain_actor = ray.remote(Echo).remote()
    plain_actor_ctx = ray.remote(EchoCtx).remote()
    traced_actor = kray.remote(Echo).options(runtime_env=env(SERVICES["traced_actor"])).remote()
    traced_arg = kray.remote(Echo).options(runtime_env=env(SERVICES["traced_actor_arg"])).remote()
    after, wait = (
        kray.remote(Echo)
        .options(runtime_env=env(SERVICES[f"traced_actor_{mode}"], **{kray.FLUSH_MODE_ENV: mode}))
        .remote()
        for mode in ("after", "wait")
    )
    no_flush = (
        kray.remote(Echo)
        .options(
            runtime_env=env(SERVICES["traced_actor_no_flush"], **{kray.FLUSH_TIMEOUT_ENV: "0"})
        )
        .remote()
    )
    plain_task = ray.remote(noop)
    plain_task_ctx = ray.remote(noop_ctx)
    traced_task = kray.remote(noop).options(runtime_env=env(SERVICES["traced_task"]))
    return {
        "plain_actor": plain_actor.noop.remote,
        "plain_actor_ctx": lambda: plain_actor_ctx.noop.remote(_kilostar_ctx=snapshot()),
        "traced_actor": traced_actor.noop.remote,
        "plain_actor_arg": lambda: plain_actor.one.remote("item"),
        "traced_actor_arg": lambda: traced_arg.one.remote("item"),
        "traced_actor_after": after.noop.remote,
        "traced_actor_wait": wait.noop.remote,
        "traced_actor_no_flush": no_flush.noop.remote,
        "plain_task": plain_task.remote,
        "plain_task_ctx": lambda: plain_task_ctx.remote(_kilostar_ctx=snapshot()),
        "traced_task": traced_task.remote,
    }


def _timed(call: Callable[[], Any], count: int) -> list[float]:
    import ray

    times = []
    for _ in range(count):
        began = time.perf_counter()
        ray.get(call())
        times.append(time.perf_counter() - began)
    return times


def _block(arms: dict[str, Callable[[], Any]], settings: Settings) -> dict[str, list[float]]:
    """One block: rounds of a run of timed calls per arm (the order reversed every other round),
    until every arm has made ``settings.calls`` calls."""
    order = [arm for arm in ROUND if arm in arms]
    times: dict[str, list[float]] = {arm: [] for arm in order}
    for index in range(-(-settings.calls // settings.run)):
        for arm in order if index % 2 == 0 else reversed(order):
            times[arm] += _timed(arms[arm], min(settings.run, settings.calls - len(times[arm])))
    return times


def _measure(settings: Settings, endpoint: str, quiet: bool) -> dict[str, Any]:
    """In this process: start the cluster, time every arm, return the figures."""
    from kilostar_otel import configure, request_id_scope, workflow
    from kilostar_otel.integrations import ray as kray

    with tempfile.TemporaryDirectory(prefix="kilostar-ray-bench-") as tmp:
        kray.start_local_cluster(
            tmp,
            num_cpus=2,
            endpoint=f"http://{endpoint}",
            protocol="grpc",
            service_name="ray-bench-worker",
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        )
        import ray

        telemetry = configure("ray-bench-driver", endpoint=f"http://{endpoint}", protocol="grpc")
        try:
            arms = _arms(endpoint)
            made = dict.fromkeys(ARMS, 0)
            times: dict[str, list[list[float]]] = {arm: [] for arm in ARMS}
            with request_id_scope("req-ray-bench"), workflow("ray-bench"):
                for arm, call in arms.items():
                    _timed(call, settings.warmup)
                    made[arm] += settings.warmup
                for block in range(settings.blocks):
                    for arm, timed in _block(arms, settings).items():
                        times[arm].append(timed)
                        made[arm] += settings.calls
                    if not quiet:
                        medians = {a: statistics.median(times[a][-1]) * 1e3 for a in ARMS}
                        print(
                            f"  ray block {block + 1}/{settings.blocks} "
                            + " ".join(f"{a} {m:.2f} ms" for a, m in medians.items()),
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            time.sleep(1.0)  # idle, as before Ray reaps a worker: the idle mode exports now
            telemetry.shutdown()
            ray.shutdown()
    return {"times": times, "made": made}


def run(settings: Settings, quiet: bool = False) -> dict[str, Any]:
    """Time the arms on a fresh cluster and count every traced span; a JSON-able dict."""
    import os
    import subprocess

    from benchmarks.capacity import ReceiverProcess

    receiver = ReceiverProcess()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_ray",
                "--child",
                receiver.endpoint,
                json.dumps(asdict(settings)),
            ],
            stdout=subprocess.PIPE,
            stderr=None if not quiet else subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=1200,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the Ray benchmark failed:\n{(done.stderr or '')[-3000:]}")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        delivered = {
            arm: receiver.wait_for(service, measured["made"][arm])
            for arm, service in SERVICES.items()
        }
    finally:
        receiver.close()
    return {
        "settings": asdict(settings),
        "times": measured["times"],
        "made": measured["made"],
        "delivered": delivered,
    }


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Per arm the median call time; per pair the median and quartiles of the block ratios."""
    times = results["times"]
    medians = {arm: statistics.median(t for block in times[arm] for t in block) for arm in ARMS}
    ratios: dict[str, dict[str, Any]] = {}
    for traced, plain in PAIRS:
        per_block = [
            statistics.median(a) / statistics.median(b)
            for a, b in zip(times[traced], times[plain], strict=True)
        ]
        entry: dict[str, Any] = {"ratio": statistics.median(per_block), "blocks": per_block}
        if len(per_block) >= 4:
            q = statistics.quantiles(per_block, n=4)
            entry["quartiles"] = (q[0], q[2])
        ratios[traced] = entry
    return {"medians": medians, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.bench_ray [--quick] [--json PATH]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import logging

        logging.getLogger("opentelemetry").setLevel(logging.ERROR)
        endpoint, raw = args.child
        result = _measure(Settings(**json.loads(raw)), endpoint, quiet=False)
        print(json.dumps(result), flush=True)
        return 0
    results = run(Settings.quick() if args.quick else Settings())
    write_results(results, args.json)
    brief = summary(results)
    for arm, seconds in brief["medians"].items():
        print(f"{arm:24} {seconds * 1e3:.2f} ms", file=sys.stderr)
    for arm, entry in brief["ratios"].items():
        print(f"{arm:24} {entry['ratio']:.2f}x", file=sys.stderr)
    print(f"delivered {results['delivered']} of {results['made']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
