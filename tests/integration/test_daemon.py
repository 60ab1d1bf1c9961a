"""The daemon as a real process on a real directory with the inotify observer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kvgroomd.format.header import TOUCH_BYTES, Header

# Conversation C of the fixtures, written by the engine's own store code
# (fixtures README): each text is a strict byte prefix of the next.
C_CONTINUED_1152 = "f0922bcf3e95efae8b6fe801839d6c6b12b7179d.kv"
C_COLD_1920 = "00919d51f332084cea61ae088886925bd2b9b2d3.kv"
C_CONTINUED_2304 = "c452d78715c5543a16af56e2eac8aa4eaf0579f7.kv"
C_CONTINUED_3456 = "501ca170cf30b6515672834eed9769583e70de8b.kv"
C_EVICT_3622 = "d2a6b33eaa3c4c352c04335f6063355184c569ea.kv"
BAD_MAGIC = "c59324081c8d45bf778fa1dd93b934a8b4f30ea9.kv"
TEMP_FILE = "c7bc6ea3ed6986e74ae831c8542f240f92879b62.kv.tmp.12345"


def land(fixtures: Path, cache: Path, name: str, pid: int = 4242) -> Path:
    """Store a fixture the way the engine does: temp file, then rename."""
    tmp = cache / f"{name}.tmp.{pid}"
    shutil.copyfile(fixtures / name, tmp)
    final = cache / name
    os.rename(tmp, final)
    return final


def touch(path: Path, now: int) -> None:
    """The engine's hit: rewrite the first 48 bytes in place."""
    raw = path.read_bytes()[:52]
    h = Header.parse(raw)
    assert isinstance(h, Header)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, h.touched(now).pack()[:TOUCH_BYTES], 0)
    finally:
        os.close(fd)


class TestWatching:
    def test_rename_landing_is_indexed_and_temp_is_not(self, fixtures_dir, cache_dir, start_daemon):
        """A rename into `<sha>.kv` is indexed; the temp name never is."""
        d = start_daemon(cache_dir=cache_dir)
        shutil.copyfile(fixtures_dir / TEMP_FILE, cache_dir / TEMP_FILE)
        land(fixtures_dir, cache_dir, C_COLD_1920)
        added = d.wait_for("snapshot.added")
        assert [r["sha"] for r in added] == [C_COLD_1920[:40]]
        assert added[0]["reason"] == "cold"
        assert added[0]["tokens"] == 1920
        assert not any(TEMP_FILE in str(r.get("path")) for r in d.events())
        assert (cache_dir / TEMP_FILE).exists()

    def test_direct_create_is_indexed_once_closed(self, fixtures_dir, cache_dir, start_daemon):
        """A file written in place under its final name is indexed, without a spurious invalid."""
        d = start_daemon(cache_dir=cache_dir)
        data = (fixtures_dir / C_COLD_1920).read_bytes()
        with open(cache_dir / C_COLD_1920, "wb") as f:
            f.write(data[:30])
            f.flush()
            f.write(data[30:])
        d.wait_for("snapshot.added", sha=C_COLD_1920[:40])
        assert d.events("snapshot.invalid") == []

    def test_hard_link_is_indexed(self, fixtures_dir, cache_dir, tmp_path, start_daemon):
        """A snapshot hard-linked into place (no close event) is indexed."""
        d = start_daemon(cache_dir=cache_dir)
        outside = tmp_path / "outside.kv"
        shutil.copyfile(fixtures_dir / C_COLD_1920, outside)
        os.link(outside, cache_dir / C_COLD_1920)
        d.wait_for("snapshot.added", sha=C_COLD_1920[:40])

    def test_in_place_touch_updates_hits(self, fixtures_dir, cache_dir, start_daemon):
        """The engine's in-place header rewrite is seen: hits go up, the inode stays."""
        path = land(fixtures_dir, cache_dir, C_CONTINUED_3456)
        ino = path.stat().st_ino
        d = start_daemon(cache_dir=cache_dir)
        touch(path, 1_800_000_000)
        upd = d.wait_for("snapshot.updated", sha=C_CONTINUED_3456[:40])
        assert upd[0]["hits"] == 1
        assert path.stat().st_ino == ino

    def test_trailer_rewrite_changes_size(self, fixtures_dir, cache_dir, start_daemon):
        """A trailer rewrite that grows the file is seen as a new size."""
        path = land(fixtures_dir, cache_dir, C_CONTINUED_3456)
        d = start_daemon(cache_dir=cache_dir)
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.seek(0, os.SEEK_END)
            f.write(b"KTM" + b"\0" * 61)
        upd = d.wait_for("snapshot.updated", sha=C_CONTINUED_3456[:40])
        assert upd[0]["size"] == size + 64

    def test_engine_deletion_is_seen(self, fixtures_dir, cache_dir, start_daemon):
        """A snapshot the engine unlinks leaves the index and the usage."""
        path = land(fixtures_dir, cache_dir, C_COLD_1920)
        d = start_daemon(cache_dir=cache_dir)
        assert d.events("daemon.ready")[0]["snapshots"] == 1
        path.unlink()
        gone = d.wait_for("snapshot.removed", sha=C_COLD_1920[:40])
        assert gone[0]["dir_bytes"] == 0

    def test_foreign_and_invalid_files_are_left_alone(self, fixtures_dir, cache_dir, start_daemon):
        """sysprompt.kv, a temp file and a corrupt snapshot survive a budget of one byte."""
        for name in ("sysprompt.kv", TEMP_FILE, BAD_MAGIC):
            shutil.copyfile(fixtures_dir / name, cache_dir / name)
        d = start_daemon(cache_dir=cache_dir, budget=1, protect_new=0)
        bad = d.wait_for("snapshot.invalid")
        assert [(Path(r["path"]).name, r["why"]) for r in bad] == [(BAD_MAGIC, "magic")]
        land(fixtures_dir, cache_dir, C_COLD_1920)
        d.wait_for("snapshot.unlinked", sha=C_COLD_1920[:40], cause="budget")
        assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
            ["sysprompt.kv", TEMP_FILE, BAD_MAGIC]
        )

    def test_invalid_file_is_reported_once(self, fixtures_dir, cache_dir, start_daemon):
        """A corrupt file is reported once, not again at every reconcile or touch."""
        shutil.copyfile(fixtures_dir / BAD_MAGIC, cache_dir / BAD_MAGIC)
        d = start_daemon(cache_dir=cache_dir, reconcile_interval=0.2)
        d.wait_for("reconcile.done", count=4, startup=False)
        assert len(d.events("snapshot.invalid")) == 1

    def test_reconcile_repairs_a_missed_change(self, fixtures_dir, cache_dir, start_daemon):
        """An in-place write that is never closed (no event we act on) is repaired by reconcile."""
        path = land(fixtures_dir, cache_dir, C_CONTINUED_3456)
        d = start_daemon(cache_dir=cache_dir, reconcile_interval=0.5)
        fd = os.open(path, os.O_RDWR)
        try:
            raw = os.pread(fd, 52, 0)
            h = Header.parse(raw)
            assert isinstance(h, Header)
            os.pwrite(fd, h.touched(1_800_000_000).pack()[:TOUCH_BYTES], 0)
            os.utime(path, ns=(1, 1))  # make the change visible to a fingerprint
            done = d.wait_for("reconcile.done", startup=False, repaired=1)
        finally:
            os.close(fd)
        assert done[0]["changed"] == 1


class TestSupersession:
    def test_conversation_c_keeps_one_snapshot_per_chain(self, fixtures_dir, cache_dir, start_daemon):
        """Replaying conversation C leaves cold 1920, continued 3456 and the evict."""
        d = start_daemon(cache_dir=cache_dir)
        land(fixtures_dir, cache_dir, C_CONTINUED_1152)
        d.wait_for("snapshot.added", sha=C_CONTINUED_1152[:40])
        land(fixtures_dir, cache_dir, C_COLD_1920)
        first = d.wait_for("snapshot.unlinked", cause="superseded")
        assert first[0]["sha"] == C_CONTINUED_1152[:40]
        assert first[0]["superseded_by"] == C_COLD_1920[:40]
        assert first[0]["superseded_by_tokens"] == 1920
        land(fixtures_dir, cache_dir, C_CONTINUED_2304)
        d.wait_for("snapshot.added", sha=C_CONTINUED_2304[:40])
        land(fixtures_dir, cache_dir, C_CONTINUED_3456)
        second = d.wait_for("snapshot.unlinked", count=2, cause="superseded")[1]
        assert (second["sha"], second["superseded_by"]) == (
            C_CONTINUED_2304[:40], C_CONTINUED_3456[:40],
        )  # fmt: skip
        land(fixtures_dir, cache_dir, C_EVICT_3622)
        d.wait_for("snapshot.added", sha=C_EVICT_3622[:40])
        assert d.stop() == 0
        assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
            [C_COLD_1920, C_CONTINUED_3456, C_EVICT_3622]
        )
        assert len(d.events("snapshot.unlinked")) == 2

    def test_start_up_sweep_catches_what_landed_while_down(self, fixtures_dir, cache_dir, start_daemon):
        """Files already on disk at start are groomed before daemon.ready."""
        for name in (C_CONTINUED_1152, C_COLD_1920, C_CONTINUED_2304, C_CONTINUED_3456, C_EVICT_3622):
            shutil.copyfile(fixtures_dir / name, cache_dir / name)
        d = start_daemon(cache_dir=cache_dir)
        ready_at = d.records.index(d.events("daemon.ready")[0])
        unlinked = [r for r in d.records[:ready_at] if r["event"] == "snapshot.unlinked"]
        assert sorted(r["sha"] for r in unlinked) == sorted(
            [C_CONTINUED_1152[:40], C_CONTINUED_2304[:40]]
        )
        assert d.events("daemon.ready")[0]["snapshots"] == 3

    def test_dry_run_deletes_nothing(self, fixtures_dir, cache_dir, start_daemon):
        """With dry_run the decision is logged as would_unlink and the file stays."""
        d = start_daemon(cache_dir=cache_dir, dry_run=True)
        land(fixtures_dir, cache_dir, C_CONTINUED_1152)
        d.wait_for("snapshot.added", sha=C_CONTINUED_1152[:40])
        land(fixtures_dir, cache_dir, C_COLD_1920)
        would = d.wait_for("snapshot.would_unlink", cause="superseded")
        assert would[0]["sha"] == C_CONTINUED_1152[:40]
        assert d.stop() == 0
        assert (cache_dir / C_CONTINUED_1152).exists()
        assert d.events("snapshot.unlinked") == []

    def test_evict_arrival_supersedes_nothing(self, fixtures_dir, cache_dir, start_daemon):
        """Supersession is not applied to an evict arrival, even with a continued prefix on disk."""
        d = start_daemon(cache_dir=cache_dir)
        land(fixtures_dir, cache_dir, C_CONTINUED_3456)
        d.wait_for("snapshot.added", sha=C_CONTINUED_3456[:40])
        land(fixtures_dir, cache_dir, C_EVICT_3622)
        d.wait_for("snapshot.added", sha=C_EVICT_3622[:40])
        assert d.stop() == 0
        assert (cache_dir / C_CONTINUED_3456).exists()
        assert d.events("snapshot.unlinked") == []


class TestBudget:
    def test_budget_evicts_down_to_low_watermark(self, fixtures_dir, cache_dir, start_daemon):
        """Over budget, the daemon unlinks by policy until usage is at budget * low_watermark."""
        names = [C_COLD_1920, C_CONTINUED_3456, C_EVICT_3622, "07a93c433f7a2950910fd897d9cfdd23cc963a16.kv"]
        for name in names:
            shutil.copyfile(fixtures_dir / name, cache_dir / name)
        total = sum((cache_dir / n).stat().st_size for n in names)
        budget = total - 1000
        d = start_daemon(cache_dir=cache_dir, budget=budget, protect_new=0, supersede=False)
        unlinked = d.events("snapshot.unlinked", cause="budget")
        assert unlinked, "over budget at start: something must go"
        assert all(r["policy"] == "prefill" and "score" in r for r in unlinked)
        left = sum(p.stat().st_size for p in cache_dir.iterdir())
        assert left <= budget * 0.9
        assert unlinked[-1]["dir_bytes"] == left
        assert d.events("daemon.ready")[0]["dir_bytes"] == left

    def test_symlink_named_like_a_snapshot_is_never_followed(self, fixtures_dir, cache_dir, tmp_path, start_daemon):
        """A symlink `<sha>.kv` is reported, not counted, and its target survives."""
        target = tmp_path / "elsewhere.kv"
        shutil.copyfile(fixtures_dir / C_COLD_1920, target)
        (cache_dir / C_COLD_1920).symlink_to(target)
        d = start_daemon(cache_dir=cache_dir, budget=1, protect_new=0)
        bad = d.wait_for("snapshot.invalid")
        assert bad[0]["why"] == "not_regular"
        assert d.events("daemon.ready")[0]["snapshots"] == 0
        assert target.exists() and (cache_dir / C_COLD_1920).is_symlink()

