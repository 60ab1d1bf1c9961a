"""Signals reach the daemon at once (kvgroomd/daemon/_threads.py).

A Python signal handler cannot reliably wake a main thread asleep in the
loop's queue read: a signal the kernel hands to another thread, or to the
main thread just before it starts to wait, was handled only at the loop's
next timer (seen in CI: a SIGTERM answered 300 s late). The daemon blocks
SIGTERM, SIGINT and SIGHUP in every thread and takes them in one thread
with sigwait(). Read from /proc on a real daemon with its inotify watcher
and metrics server running; then a SIGTERM sent the moment daemon.ready is
out (where the race was) stops it at once, several times over.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

HANDLED = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM}


def blocked(pid: int, tid: int) -> set[int]:
    """The signals thread `tid` of process `pid` blocks (SigBlk in /proc)."""
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {s for s in range(1, 65) if mask >> (s - 1) & 1}
    raise AssertionError(f"no SigBlk for thread {tid}")


def test_every_thread_blocks_the_daemons_signals(fixture_cache: Path, start_daemon: Any) -> None:
    """No thread can take a handled signal except through the signal thread's
    sigwait(): every one blocks them, numpy's BLAS threads included."""
    d = start_daemon(cache_dir=fixture_cache, metrics={"listen": "127.0.0.1:0"})
    d.wait_for("metrics.listening")
    tids = sorted(int(t) for t in os.listdir(f"/proc/{d.pid}/task"))
    # While a thread waits in sigwait() the kernel lifts the block on what it
    # waits for: that one thread shows them unblocked, and is in that wait.
    waiting = [t for t in tids
               if "sigtimedwait" in Path(f"/proc/{d.pid}/task/{t}/wchan").read_text()]  # fmt: skip
    assert len(waiting) == 1
    others = [t for t in tids if t not in waiting]
    assert len(others) >= 3  # main, inotify watcher, metrics server (and numpy's)
    for tid in others:
        assert blocked(d.pid, tid) >= HANDLED, tid
    assert d.stop(timeout=10) == 0


def test_a_sigterm_as_the_daemon_goes_idle_stops_it_at_once(tmp_path: Path,
                                                            start_daemon: Any) -> None:  # fmt: skip
    """SIGTERM right after daemon.ready, when the loop is about to sleep for a
    5-minute timer: exit 0 within 5 s, five times."""
    for i in range(5):
        cache = tmp_path / f"kv{i}"
        cache.mkdir()
        d = start_daemon(cache_dir=cache)  # returns as daemon.ready is read
        start = time.monotonic()
        assert d.stop(timeout=5) == 0
        assert time.monotonic() - start < 5
