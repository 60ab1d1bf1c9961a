"""The cache directory is pinned (#11.2) and locked (#11.6): swapping it for a
symlink, renaming it away or replacing it never makes kvgroomd act on another
directory, and a second kvgroomd on one directory is refused. Real daemons,
real renames and symlinks."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import structlog

from kvgroomd.config import Config
from kvgroomd.core.evict import Budget, choose
from kvgroomd.core.scoring import POLICIES, Clock
from kvgroomd.daemon.groom import DiskGroomer
from kvgroomd.daemon.pinned import EXIT_LOCKED, PinnedDir, Unpinned

OLD = 1_700_000_000  # created long ago: nothing is protected as young


def _fill(kit, directory: Path, n: int, tag: str) -> dict[str, int]:
    directory.mkdir(exist_ok=True)
    for i in range(n):
        kit.write_snapshot(directory, f"{tag} conversation {i} ".encode() * 30, created_at=OLD)
    return {e.name: e.inode() for e in os.scandir(directory)}


def _inodes(directory: Path) -> dict[str, int]:
    return {e.name: e.inode() for e in os.scandir(directory)}


def test_swapped_for_a_symlink_acts_on_neither_directory(tmp_path, kit, start_daemon):
    """The cache dir renamed away and replaced by a symlink to a fuller directory:
    the daemon says so at once, unlinks nothing in either directory, waits, and
    grooms again once a real directory is back under the name."""
    cache, other = tmp_path / "kv", tmp_path / "other"
    mine = _fill(kit, cache, 3, "mine")
    theirs = _fill(kit, other, 30, "theirs")
    budget = sum((cache / n).stat().st_size for n in mine) + 100  # ours fit; theirs do not
    d = start_daemon(cache_dir=cache, budget=budget, protect_new=0, reconcile_interval=0.3)
    os.rename(cache, tmp_path / "kv.old")
    cache.symlink_to(other)
    changed = d.wait_for("daemon.cache_dir_changed", timeout=5)[0]
    assert changed["why"].startswith(("replaced by a symlink", "gone: deleted, moved away"))
    time.sleep(1.5)  # several reconcile intervals and re-pin attempts
    assert _inodes(other) == theirs
    assert _inodes(tmp_path / "kv.old") == mine
    assert d.events("snapshot.unlinked") == []
    # A real directory back under the name is pinned and groomed again.
    cache.unlink()
    os.rename(tmp_path / "kv.old", cache)
    d.wait_for("daemon.cache_dir_pinned", count=2, timeout=5)
    kit.write_snapshot(cache, b"one more, over the budget " * 40, created_at=OLD)
    d.wait_for("snapshot.unlinked", cause="budget", timeout=5)
    assert _inodes(other) == theirs
    assert d.proc.poll() is None


def test_a_symlink_as_cache_dir_is_refused_at_start(tmp_path, kit, run_cli):
    """`run` and `groom --once` refuse a cache_dir that is a symlink (exit 3),
    naming its target, and touch nothing behind it."""
    other = tmp_path / "other"
    theirs = _fill(kit, other, 3, "theirs")
    (tmp_path / "kv").symlink_to(other)
    for cmd in (["run"], ["groom", "--once"]):
        r = run_cli(*cmd, "--cache-dir", tmp_path / "kv", "--budget", "1", timeout=20)
        assert r.returncode == 3, r.stderr
        assert "is a symlink" in r.stderr and str(other) in r.stderr
    assert _inodes(other) == theirs


def test_the_deleter_stops_when_the_directory_moved_after_the_decision(tmp_path, kit):
    """Decisions made on the pinned directory, then the directory is renamed
    away and the name points elsewhere: executing them raises Unpinned before
    anything is renamed or unlinked, in either directory."""
    cache, other = tmp_path / "kv", tmp_path / "other"
    mine = _fill(kit, cache, 4, "mine")
    theirs = _fill(kit, other, 4, "theirs")
    g = DiskGroomer(Config(cache_dir=cache), structlog.get_logger())
    g.reconcile(float(OLD + 10**6), startup=True)
    decisions = choose(g.index, Budget(1, 0.9, 0), Clock(OLD + 10**6), POLICIES["prefill"])
    assert len(decisions) == 4
    os.rename(cache, tmp_path / "kv.old")
    other.rename(cache)  # same names, other files: a path-based deleter would hit them
    with pytest.raises(Unpinned, match="another directory"):
        g.execute(decisions)
    assert _inodes(cache) == theirs
    assert _inodes(tmp_path / "kv.old") == mine
    g.directory.unpin()


def test_every_operation_goes_through_the_pinned_descriptor(tmp_path, kit):
    """Reads and listings of a pinned directory keep reading that directory
    after the path is swapped (and `check` says it is no longer named)."""
    cache = tmp_path / "kv"
    mine = _fill(kit, cache, 2, "mine")
    d = PinnedDir.at(cache)
    os.rename(cache, tmp_path / "moved")
    cache.mkdir()
    with d.scandir() as it:
        assert {e.name for e in it} == set(mine)
    assert d.why_not_named() == "names another directory now (moved, replaced or mounted over)"
    with pytest.raises(Unpinned):
        d.check()
    d.unpin()


def test_a_second_daemon_on_one_directory_is_refused(tmp_path, kit, start_daemon, run_cli):
    """A second `run` on a directory a daemon grooms exits 6 at once with a line
    naming the first one's pid; `groom --once` too; once the first stops, a
    new one starts normally."""
    cache = tmp_path / "kv"
    _fill(kit, cache, 3, "mine")
    first = start_daemon(cache_dir=cache)
    second = start_daemon(cache_dir=cache, wait_ready=False)
    assert second.proc.wait(timeout=10) == EXIT_LOCKED
    second.wait_for("daemon.stopped")
    locked = second.events("daemon.cache_dir_locked")[0]
    assert "already grooms" in locked["error"]
    assert locked["pid"] in (first.proc.pid, None)  # None where /proc/locks is hidden
    assert second.events("snapshot.unlinked") == second.events("snapshot.added") == []
    r = run_cli("groom", "--once", "--cache-dir", cache, "--budget", "1", timeout=20)
    assert r.returncode == EXIT_LOCKED
    assert "daemon.cache_dir_locked" in r.stdout
    assert len(os.listdir(cache)) == 3
    first.signal(signal.SIGTERM)
    assert first.stop() == 0
    third = start_daemon(cache_dir=cache)
    assert third.events("daemon.cache_dir_locked") == []


def test_mostly_foreign_content_is_warned_about(tmp_path, kit, start_daemon):
    """A directory whose entries are mostly not snapshots (a home or data
    directory given by mistake) is groomed, with a warning that says so."""
    cache = tmp_path / "kv"
    _fill(kit, cache, 2, "mine")
    for i in range(40):
        (cache / f"notes-{i}.txt").write_text("not a snapshot")
    d = start_daemon(cache_dir=cache)
    warn = d.wait_for("daemon.cache_dir_unusual")[0]
    assert (warn["entries_seen"], warn["snapshots_or_temps"]) == (42, 2)
    assert len(warn["examples"]) == 5
