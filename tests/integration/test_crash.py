"""SIGKILL in the middle of a large eviction, then a restart: every unlink that
was logged happened, nothing was lost that was not chosen, and the restarted
daemon's index matches the directory."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from kvgroomd.daemon.apply import QUARANTINE_PREFIX
from kvgroomd.testing.audit import look, plant, valid_snapshots
from kvgroomd.testing.engine import populate

GiB = 1024**3
BUDGET = 50 * GiB  # the 2,000 files hold about 600 GiB (sparse): most must go


def _inodes(cache: Path) -> dict[str, int]:
    return {e.name: e.inode() for e in os.scandir(cache)}


@pytest.mark.parametrize("after", [40, 700])
def test_sigkill_mid_eviction_then_restart(tmp_path, start_daemon, after):
    """Killed after `after` logged unlinks, no logged unlink is undone or missing and
    at most the one unlink in flight is unlogged; a restart puts back a held file,
    finishes the job and indexes exactly what is on disk."""
    cache = tmp_path / "kv"
    populate(cache, 2000, seed=after)
    planted = plant(cache, tmp_path / "outside", "start")  # protected or invalid: never go
    before = _inodes(cache)
    # No supersession sweep: it would dominate the start-up pass (and is quadratic
    # in a bucket of texts sharing their first 64 bytes, as populate()'s all do).
    config = {"cache_dir": cache, "budget": BUDGET, "protect_new": 0,
              "reconcile_interval": 3600, "supersede": False}  # fmt: skip
    d = start_daemon(wait_ready=False, **config)
    d.wait_for("snapshot.unlinked", count=after, timeout=60, cause="budget")
    d.proc.send_signal(signal.SIGKILL)
    assert d.stop() == -signal.SIGKILL
    assert d.events("daemon.ready") == [], "the pass ended before the kill"

    # Every logged unlink happened: that inode is nowhere in the directory.
    logged = {(Path(r["path"]).name, r["inode"]) for r in d.events("snapshot.unlinked")}
    now = _inodes(cache)
    held = {n.removeprefix(QUARANTINE_PREFIX): i for n, i in now.items()
            if n.startswith(QUARANTINE_PREFIX)}  # fmt: skip
    assert not {(n, i) for n, i in now.items()} & logged
    assert not set(held.items()) & logged
    # Nothing went that was not logged, but the one unlink the kill interrupted.
    missing = {(n, i) for n, i in before.items() if now.get(n) != i and held.get(n) != i}
    unlogged = missing - logged
    assert len(unlogged) + len(held) <= 1, (unlogged, held)
    for path, seen in planted.items():
        assert look(path) == seen

    # A restart puts back what was held, finishes the pass and indexes what is there.
    d2 = start_daemon(**config)
    recovered = d2.events("snapshot.unlink_recovered")
    assert [Path(r["path"]).name for r in recovered] == list(held)
    second = {(Path(r["path"]).name, r["inode"]) for r in d2.events("snapshot.unlinked")}
    for name, ino in held.items():  # back under its name, or chosen again and logged
        assert _inodes(cache).get(name) == ino or (name, ino) in second
    ready = d2.events("daemon.ready")[0]
    assert (ready["snapshots"], ready["dir_bytes"]) == valid_snapshots(cache)
    assert ready["dir_bytes"] <= BUDGET
    assert not any(n.startswith(QUARANTINE_PREFIX) for n in os.listdir(cache))
    logged |= second
    final = _inodes(cache)
    gone = {(n, i) for n, i in before.items() if final.get(n) != i}
    assert gone - logged == unlogged
    for path, seen in planted.items():
        assert look(path) == seen
    assert d2.stop() == 0
