"""Timers run on the monotonic clock: a wall clock stepped back an hour (NTP,
an operator, a VM resumed) does not stop systemd's watchdog pings, and wall
time is only the policy's `now`. The daemon runs in this process with its
wall clock injected; systemd's side is a real notify socket."""

from __future__ import annotations

import itertools
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from kvgroomd.config import Config
from kvgroomd.daemon.loop import Daemon
from kvgroomd.daemon.watch import Wake

STEP_AT = 0.6  # seconds after start when the wall clock jumps back
RUN_FOR = 2.0


class SteppedClock:
    """time.time(), until STEP_AT seconds in; then an hour behind."""

    def __init__(self) -> None:
        self.stepped_at = time.monotonic() + STEP_AT
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return time.time() - (3600 if time.monotonic() >= self.stepped_at else 0)


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[float, str]]]:
    """A bound notify socket; (monotonic time, message) of every datagram."""
    address = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.05)
    got: list[tuple[float, str]] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                got.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                continue

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
    yield got
    done.set()
    reader.join()
    sock.close()


def test_watchdog_pings_continue_after_the_wall_clock_steps_back(tmp_path, notify) -> None:
    """With the wall clock stepped back an hour mid-run, WATCHDOG=1 keeps
    coming every ~0.1 s (on wall-clock timers the next ping would be an hour
    away and systemd would kill the service)."""
    cache = tmp_path / "kv"
    cache.mkdir()
    clock = SteppedClock()
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    daemon = Daemon(Config(cache_dir=cache), structlog.get_logger(), clock=clock)

    def stop() -> None:
        daemon._stop = True  # what the SIGTERM handler does
        daemon.queue.put(Wake())

    timer = threading.Timer(RUN_FOR, stop)
    timer.start()
    try:
        assert daemon.run() == 0
    finally:
        timer.cancel()
        for s, h in saved.items():
            signal.signal(s, h)
    pings = [t for t, m in notify if "WATCHDOG=1" in m]
    after = [t for t in pings if t > clock.stepped_at]
    assert len(after) >= 8, f"{len(after)} pings in {RUN_FOR - STEP_AT:.1f} s after the step"
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert max(gaps) < 0.5
