"""Faults and hostile entries: the daemon keeps running, says what happened
and deletes nothing it should not (real processes, real files, real inotify).

Permission tests run the daemon without capabilities (setpriv) when the
suite runs as root, since root's CAP_DAC_OVERRIDE ignores file modes.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from kvgroomd.config import Config
from kvgroomd.core.evict import Budget, choose
from kvgroomd.core.scoring import POLICIES, Clock
from kvgroomd.daemon.groom import DiskGroomer
from kvgroomd.format.header import Reason
from kvgroomd.testing.audit import look, plant

# Conversation C of the fixtures: each text is a strict byte prefix of the next.
C_CONTINUED_1152 = "f0922bcf3e95efae8b6fe801839d6c6b12b7179d.kv"
C_COLD_1920 = "00919d51f332084cea61ae088886925bd2b9b2d3.kv"
C_CONTINUED_2304 = "c452d78715c5543a16af56e2eac8aa4eaf0579f7.kv"
C_CONTINUED_3456 = "501ca170cf30b6515672834eed9769583e70de8b.kv"
C_EVICT_3622 = "d2a6b33eaa3c4c352c04335f6063355184c569ea.kv"
TEMP_FILE = "c7bc6ea3ed6986e74ae831c8542f240f92879b62.kv.tmp.12345"
MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


def _unprivileged() -> tuple[str, ...]:
    """A command prefix under which file modes apply to the daemon."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
    return ("setpriv", "--bounding-set=-all", "--inh-caps=-all", "--")


def land(fixtures: Path, cache: Path, name: str, pid: int = 4242) -> Path:
    """Store a fixture the way the engine does: temp file, then rename."""
    tmp = cache / f"{name}.tmp.{pid}"
    shutil.copyfile(fixtures / name, tmp)
    os.rename(tmp, cache / name)
    return cache / name


def _wait_stopped(pid: int) -> None:
    """Wait until every thread of `pid` is stopped (SIGSTOP is asynchronous)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = [
            Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[0]
            for t in os.listdir(f"/proc/{pid}/task")
        ]
        if all(s in "tT" for s in states):
            return
        time.sleep(0.01)
    pytest.fail(f"process {pid} did not stop")


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


class TestHostileEntries:
    def test_unchanged_invalid_entries_are_no_drift(self, cache_dir, tmp_path, start_daemon):
        """Rescans of a directory holding every kind of unusable entry repair nothing."""
        plant(cache_dir, tmp_path / "outside", "start")
        d = start_daemon(cache_dir=cache_dir, reconcile_interval=0.3)
        done = d.wait_for("reconcile.done", count=3, startup=False)
        assert [(r["repaired"], r["added"], r["changed"]) for r in done] == [(0, 0, 0)] * 3
        assert done[-1]["invalid"] == 8

    def test_extreme_header_times_and_mtimes_are_indexed(self, cache_dir, kit, start_daemon):
        """Snapshots with u64 times past 2^63 in their header, or a file time past
        2262 (beyond int64 nanoseconds), are indexed and evictable like any other."""
        paths = []
        for i, (created, last) in enumerate(
            [(2**64 - 1, 0), (1_780_000_000, 2**63), (0, 2**64 - 1)]
        ):
            path = kit.write_snapshot(cache_dir, f"extreme {i} ".encode() * 40, created_at=0)
            raw = bytearray(path.read_bytes())
            raw[24:40] = created.to_bytes(8, "little") + last.to_bytes(8, "little")
            path.write_bytes(raw)
            paths.append(path)
        late = kit.write_snapshot(cache_dir, b"mtime in year 2400 " * 40, created_at=0)
        os.utime(late, ns=(13 * 10**18, 13 * 10**18))
        paths.append(late)
        d = start_daemon(cache_dir=cache_dir)
        assert d.events("daemon.ready")[0]["snapshots"] == 4
        d.wait_for("reconcile.done", startup=True)
        assert d.stop() == 0  # one daemon per directory
        d2 = start_daemon(cache_dir=cache_dir, budget=1, protect_new=0)
        gone = {Path(r["path"]).name for r in d2.events("snapshot.unlinked")}
        # Created "in the future": its age counts from when kvgroomd saw it
        # (said once), so it is not young for ever; with protect_new 0 all go.
        assert gone == {p.name for p in paths}
        assert len(d2.events("snapshot.clock_skew")) == 1
        assert d2.proc.poll() is None


class TestBudgetUnreachable:
    def test_said_once_while_agent_files_hold_usage_up(self, cache_dir, kit, start_daemon):
        """Landings over a budget that only never-evicted (agent) files fill give
        one budget.unreachable."""
        d = start_daemon(cache_dir=cache_dir, budget=1, protect_new=3600)
        for i in range(4):
            path = kit.write_snapshot(cache_dir, f"agent file {i} ".encode() * 60,
                                      reason=Reason.AGENT_SESSION)  # fmt: skip
            d.wait_for("snapshot.added", sha=path.name[:40])
        assert len(d.events("budget.unreachable")) == 1
        assert d.events("budget.unreachable")[0]["why"].startswith("the rest is protected")
        assert d.events("snapshot.unlinked") == []


class TestLostEvents:
    def test_queue_overflow_is_said_and_a_rescan_finds_what_was_lost(
        self, fixtures_dir, cache_dir, start_daemon
    ):
        """When the kernel's inotify queue overflows, the daemon logs events_lost and
        a rescan indexes, unindexes and supersedes what the lost events carried."""
        limit = int(MAX_QUEUED.read_text())
        if limit > 4_000_000:
            pytest.skip(f"fs.inotify.max_queued_events={limit}: too many events to overflow")
        doomed = land(fixtures_dir, cache_dir, C_EVICT_3622)
        land(fixtures_dir, cache_dir, C_CONTINUED_1152)
        noise = [cache_dir / "noise-a", cache_dir / "noise-b"]
        for p in noise:
            p.write_bytes(b"")
        d = start_daemon(cache_dir=cache_dir, reconcile_interval=3600)
        d.signal(signal.SIGSTOP)  # the observer thread stops reading too
        try:
            _wait_stopped(d.proc.pid)
            # Events the daemon asks inotify for (create, close-write, delete;
            # it does not ask for attribute changes): three per round, and the
            # kernel merges no two of them.
            spare = cache_dir / "noise-c"
            for _ in range(limit // 3 + 1000):
                spare.write_bytes(b"")
                spare.unlink()
            for name in (C_COLD_1920, C_CONTINUED_2304, C_CONTINUED_3456):
                land(fixtures_dir, cache_dir, name)
            doomed.unlink()
        finally:
            d.signal(signal.SIGCONT)
        d.wait_for("observer.events_lost", timeout=30)
        done = d.wait_for("reconcile.done", startup=False, timeout=30)[0]
        assert (done["added"], done["gone"], done["repaired"]) == (3, 1, 4)
        unlinked = d.wait_for("snapshot.unlinked", count=2, cause="superseded")
        assert sorted(r["sha"] for r in unlinked) == sorted(
            [C_CONTINUED_1152[:40], C_CONTINUED_2304[:40]]
        )  # fmt: skip
        land(fixtures_dir, cache_dir, C_EVICT_3622)  # events flow again
        d.wait_for("snapshot.added", sha=C_EVICT_3622[:40])
        assert names(cache_dir) == sorted(
            [C_COLD_1920, C_CONTINUED_3456, C_EVICT_3622, "noise-a", "noise-b"]
        )  # fmt: skip
        assert d.events("observer.died") == []

    def test_cache_dir_missing_at_start_is_waited_for(self, fixtures_dir, tmp_path, start_daemon):
        """A cache dir that does not exist yet is reported once, then groomed once it appears."""
        cache = tmp_path / "later"
        d = start_daemon(cache_dir=cache, wait_ready=False)
        d.wait_for("daemon.cache_dir_missing")
        time.sleep(1.2)  # a retry or two
        cache.mkdir()
        for name in (C_CONTINUED_1152, C_COLD_1920):
            land(fixtures_dir, cache, name)
        assert d.wait_for("daemon.ready")[0]["snapshots"] == 1
        assert len(d.events("daemon.cache_dir_missing")) == 1
        assert names(cache) == [C_COLD_1920]
        assert d.events("snapshot.unlinked")[0]["sha"] == C_CONTINUED_1152[:40]

    def test_cache_dir_deleted_and_recreated_is_watched_again(
        self, fixtures_dir, cache_dir, start_daemon
    ):
        """A cache dir deleted while watched is reported, then watched and groomed again."""
        land(fixtures_dir, cache_dir, C_EVICT_3622)
        d = start_daemon(cache_dir=cache_dir)
        shutil.rmtree(cache_dir)
        d.wait_for("daemon.cache_dir_missing", why="deleted while watched")
        d.wait_for("snapshot.removed", sha=C_EVICT_3622[:40])
        time.sleep(1.1)  # a retry finds nothing
        cache_dir.mkdir()
        land(fixtures_dir, cache_dir, C_CONTINUED_1152)
        d.wait_for("observer.restarted")
        land(fixtures_dir, cache_dir, C_COLD_1920)
        d.wait_for("snapshot.unlinked", sha=C_CONTINUED_1152[:40], cause="superseded")
        assert names(cache_dir) == [C_COLD_1920]
        assert d.proc.poll() is None


class TestPermissions:
    def test_unreadable_snapshot_is_reported_kept_and_groomed_once_readable(
        self, fixtures_dir, cache_dir, start_daemon
    ):
        """A snapshot the daemon may not read is reported unreadable and neither counted
        nor deleted, even over budget; once readable it is judged like any other."""
        locked = land(fixtures_dir, cache_dir, C_CONTINUED_3456)
        locked.chmod(0)
        land(fixtures_dir, cache_dir, C_COLD_1920)
        d = start_daemon(cache_dir=cache_dir, budget=1, protect_new=0, reconcile_interval=0.5,
                         prefix=_unprivileged())  # fmt: skip
        assert d.wait_for("snapshot.invalid")[0]["why"] == "unreadable"
        assert d.events("daemon.ready")[0]["snapshots"] == 0  # the readable one was evicted
        d.wait_for("reconcile.done", count=2, startup=False)
        assert names(cache_dir) == [C_CONTINUED_3456]
        locked.chmod(0o644)
        d.wait_for("snapshot.unlinked", sha=C_CONTINUED_3456[:40], cause="budget")
        assert names(cache_dir) == []

    def test_read_only_directory_fails_unlinks_loudly_then_recovers(
        self, fixtures_dir, cache_dir, start_daemon
    ):
        """Without write permission on the directory every unlink fails and says why,
        the budget is reported unreachable for that reason, and it recovers with the permission."""
        for name in (C_COLD_1920, C_EVICT_3622):
            land(fixtures_dir, cache_dir, name)
        cache_dir.chmod(0o555)
        try:
            d = start_daemon(cache_dir=cache_dir, budget=1, protect_new=0,
                             reconcile_interval=0.5, prefix=_unprivileged())  # fmt: skip
            failed = d.wait_for("snapshot.unlink_failed", count=2)
            assert {r["why"] for r in failed} == {"Permission denied"}
            assert d.wait_for("budget.unreachable")[0]["why"].startswith("unlinks failed")
            assert names(cache_dir) == [C_COLD_1920, C_EVICT_3622]
        finally:
            cache_dir.chmod(0o755)
        d.wait_for("snapshot.unlinked", count=2, cause="budget")
        assert names(cache_dir) == []
        assert d.proc.poll() is None

    def test_unsearchable_directory_is_an_error_not_a_crash(
        self, fixtures_dir, cache_dir, start_daemon
    ):
        """A directory the daemon can no longer list is logged as an error, and once
        it can again the next rescan picks up what landed meanwhile."""
        d = start_daemon(cache_dir=cache_dir, reconcile_interval=0.5, prefix=_unprivileged())
        cache_dir.chmod(0)
        try:
            error = d.wait_for("daemon.cache_dir_error")[0]
            assert error["error"] == "Permission denied"
            land(fixtures_dir, cache_dir, C_COLD_1920)
            time.sleep(1)
        finally:
            cache_dir.chmod(0o755)
        d.wait_for("reconcile.done", startup=False, snapshots=1, timeout=15)
        assert names(cache_dir) == [C_COLD_1920]
        assert d.proc.poll() is None


class TestSpecialFiles:
    def test_symlinks_named_like_snapshots_are_never_followed(
        self, fixtures_dir, cache_dir, tmp_path, start_daemon
    ):
        """Symlinks `<sha>.kv` arriving at run time, to a file outside or inside the
        directory, are reported and left alone with their targets, even over budget."""
        d = start_daemon(cache_dir=cache_dir, budget=1, protect_new=0)
        outside = tmp_path / "elsewhere.kv"
        shutil.copyfile(fixtures_dir / C_COLD_1920, outside)
        shutil.copyfile(fixtures_dir / TEMP_FILE, cache_dir / TEMP_FILE)
        before = {p: look(p) for p in (outside, cache_dir / TEMP_FILE)}
        (cache_dir / C_COLD_1920).symlink_to(outside)  # created in place
        staged = cache_dir / f"{C_CONTINUED_1152}.tmp.7"
        staged.symlink_to(TEMP_FILE)  # relative, inside; then renamed in like a store
        os.rename(staged, cache_dir / C_CONTINUED_1152)
        bad = d.wait_for("snapshot.invalid", count=2)
        assert {(Path(r["path"]).name, r["why"], r["detail"]) for r in bad} == {
            (C_COLD_1920, "not_regular", "symlink"), (C_CONTINUED_1152, "not_regular", "symlink"),
        }  # fmt: skip
        land(fixtures_dir, cache_dir, C_CONTINUED_3456)  # a real one still goes
        d.wait_for("snapshot.unlinked", sha=C_CONTINUED_3456[:40], cause="budget")
        assert {p: look(p) for p in before} == before
        assert (cache_dir / C_COLD_1920).is_symlink() and (
            cache_dir / C_CONTINUED_1152
        ).is_symlink()
        assert [r["sha"] for r in d.events("snapshot.unlinked")] == [C_CONTINUED_3456[:40]]

    def test_fifo_and_directory_named_like_snapshots_are_left_alone(
        self, fixtures_dir, cache_dir, start_daemon
    ):
        """A FIFO or a directory named `<sha>.kv` never blocks the daemon, is reported
        once and is never removed, even over budget."""
        d = start_daemon(cache_dir=cache_dir, budget=1, protect_new=0, reconcile_interval=0.5)
        os.mkfifo(cache_dir / C_COLD_1920)
        os.mkfifo(cache_dir / "fifo.tmp")
        os.rename(cache_dir / "fifo.tmp", cache_dir / C_EVICT_3622)
        (cache_dir / C_CONTINUED_1152).mkdir()
        land(fixtures_dir, cache_dir / C_CONTINUED_1152, C_CONTINUED_2304)  # inside: not ours
        land(fixtures_dir, cache_dir, C_CONTINUED_3456)
        d.wait_for("snapshot.unlinked", sha=C_CONTINUED_3456[:40], cause="budget")
        bad = d.wait_for("snapshot.invalid", count=3)
        assert {(Path(r["path"]).name, r["detail"]) for r in bad} == {
            (C_COLD_1920, "special file"), (C_EVICT_3622, "special file"),
            (C_CONTINUED_1152, "directory"),
        }  # fmt: skip
        d.wait_for("reconcile.done", count=3, startup=False)
        assert len(d.events("snapshot.invalid")) == 3
        assert names(cache_dir) == sorted([C_COLD_1920, C_EVICT_3622, C_CONTINUED_1152])
        assert names(cache_dir / C_CONTINUED_1152) == [C_CONTINUED_2304]


NOW = 1_800_000_000.0  # after the fixtures were written: none of them is young


class TestDecisionRaces:
    """A decision, then the engine acts, then the deleter: the real groomer on real files."""

    @staticmethod
    def _decided(fixtures: Path, cache: Path) -> tuple[DiskGroomer, object]:
        for name in (C_COLD_1920, C_CONTINUED_3456):
            land(fixtures, cache, name)
        g = DiskGroomer(Config(cache_dir=cache), structlog.get_logger())
        g.reconcile(NOW, startup=True)
        decisions = choose(g.index, Budget(1, 0.9, 0), Clock(NOW), POLICIES["prefill"])
        (victim,) = [x for x in decisions if x.name == C_CONTINUED_3456]
        return g, victim

    def test_truncated_after_the_decision_is_kept(self, fixtures_dir, cache_dir):
        """A file truncated between decision and unlink is kept, and reported as truncated."""
        g, victim = self._decided(fixtures_dir, cache_dir)
        os.truncate(cache_dir / C_CONTINUED_3456, 4096)
        with capture_logs() as logs:
            g.execute([victim])
        assert [(r["event"], r.get("why")) for r in logs] == [
            ("snapshot.unlink_skipped", "changed"), ("snapshot.invalid", "truncated"),
        ]  # fmt: skip
        assert (cache_dir / C_CONTINUED_3456).stat().st_size == 4096
        assert C_CONTINUED_3456 not in g.index

    def test_replaced_after_the_decision_is_kept(self, fixtures_dir, cache_dir):
        """A file the engine replaced by rename after the decision is kept and indexed anew."""
        g, victim = self._decided(fixtures_dir, cache_dir)
        path = land(fixtures_dir, cache_dir, C_CONTINUED_3456)  # same bytes, new inode
        with capture_logs() as logs:
            g.execute([victim])
        assert [(r["event"], r.get("why")) for r in logs] == [
            ("snapshot.unlink_skipped", "changed"), ("snapshot.replaced", None),
        ]  # fmt: skip
        assert g.index.fingerprint(C_CONTINUED_3456).ino == path.stat().st_ino  # type: ignore[union-attr]

    def test_removed_by_the_engine_first_is_normal(self, fixtures_dir, cache_dir):
        """A file the engine unlinked first is skipped as gone and leaves the index."""
        g, victim = self._decided(fixtures_dir, cache_dir)
        (cache_dir / C_CONTINUED_3456).unlink()
        with capture_logs() as logs:
            g.execute([victim])
        assert [(r["event"], r.get("why"), r["log_level"]) for r in logs] == [
            ("snapshot.unlink_skipped", "gone", "debug"),
        ]  # fmt: skip
        assert C_CONTINUED_3456 not in g.index
        assert g.index.total_bytes == (cache_dir / C_COLD_1920).stat().st_size
