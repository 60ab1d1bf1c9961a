"""Signals reach the daemon's main thread (kvgroomd/daemon/_threads.py).

The kernel hands a signal sent to the process to any thread that does not
block it, and CPython runs the handler in the main thread only when that
thread wakes: a SIGTERM taken by another thread waited for the loop's next
timer (seen once in CI: 300 s). Every thread but the main one must block
the signals the daemon handles; read from /proc, on a real daemon with its
inotify watcher and metrics server running.
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


def test_only_the_main_thread_takes_the_daemons_signals(fixture_cache: Path,
                                                        start_daemon: Any) -> None:  # fmt: skip
    d = start_daemon(cache_dir=fixture_cache, metrics={"listen": "127.0.0.1:0"})
    d.wait_for("metrics.listening")
    tids = sorted(int(t) for t in os.listdir(f"/proc/{d.pid}/task"))
    workers = [t for t in tids if t != d.pid]
    assert len(workers) >= 2  # the inotify watcher and the metrics server, at least
    for tid in workers:
        assert blocked(d.pid, tid) >= HANDLED, (tid, Path(f"/proc/{d.pid}/task/{tid}/comm").read_text())
    assert not HANDLED & blocked(d.pid, d.pid)  # the main thread takes them
    start = time.monotonic()
    assert d.stop(timeout=10) == 0
    assert time.monotonic() - start < 10
