"""The flusher's three ways to export a call's spans (no cluster: the flusher alone)."""

from __future__ import annotations

import threading
import time

from kilostar_otel.integrations.ray._flush import FLUSH_MODES, Flusher


class Exports:
    """An export function that records when it ran."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.ran = threading.Event()

    def __call__(self) -> None:
        self.times.append(time.monotonic())
        self.ran.set()


def test_the_modes_and_the_default() -> None:
    from kilostar_otel.integrations import ray as kray

    assert FLUSH_MODES == ("idle", "after", "wait")
    assert kray.DEFAULT_FLUSH_MODE == "idle"
    env = kray.worker_runtime_env(flush_mode="wait")
    assert env["env_vars"] == {kray.FLUSH_MODE_ENV: "wait"}


def test_start_returns_at_once_and_the_export_follows() -> None:
    exports = Exports()
    flusher = Flusher(exports, idle_delay=60)
    flusher.start()
    assert exports.ran.wait(10)
    assert len(exports.times) == 1


def test_when_idle_exports_once_the_calls_stop() -> None:
    exports = Exports()
    flusher = Flusher(exports, idle_delay=0.2)
    began = time.monotonic()
    while time.monotonic() - began < 0.6:  # calls every 20 ms: never idle for 0.2 s
        flusher.when_idle()
        time.sleep(0.02)
    last_call = time.monotonic()
    assert exports.times == []  # busy: nothing exported yet
    assert exports.ran.wait(10)
    assert exports.times[0] - last_call >= 0.15
    time.sleep(0.4)
    assert len(exports.times) == 1  # idle stays idle: one export, not one per delay


def test_a_waiting_flush_after_idle_requests_still_covers_its_call() -> None:
    exports = Exports()
    flusher = Flusher(exports, idle_delay=60)
    flusher.when_idle()
    assert flusher.flush(10) is True  # does not wait for the idle clock
    assert len(exports.times) == 1
