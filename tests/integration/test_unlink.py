"""The deleter on real files: every refusal, the re-check, dry-run, recovery."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from kvgroomd.core.decision import Cause, Decision
from kvgroomd.core.index import decide
from kvgroomd.daemon.apply import QUARANTINE_PREFIX, Result, apply, journal_for, recover
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.daemon.read import fingerprint, read_snapshot
from kvgroomd.format.names import SnapshotName

COLD = "00919d51f332084cea61ae088886925bd2b9b2d3.kv"


def _decision(cache: Path, name: str = COLD, cause: Cause = Cause.BUDGET) -> Decision:
    snap = read_snapshot(PinnedDir.at(cache), SnapshotName(name, name[:40]))
    assert snap is not None and not hasattr(snap, "why")
    return decide(snap, cause, now=2_000_000_000)  # type: ignore[arg-type]


def _apply(cache: Path, d: Decision, *, dry_run: bool = False) -> tuple[Result, list[dict]]:
    with capture_logs() as logs:
        outcome = apply(PinnedDir.at(cache), d, dry_run=dry_run, usage=100_000, log=structlog.get_logger(),
                        context={"budget": 1})  # fmt: skip
    return outcome.result, logs


class TestApply:
    def test_unlinks_and_logs_once(self, fixtures_dir, tmp_path):
        """A matching file is unlinked and one snapshot.unlinked line reports it."""
        shutil.copyfile(fixtures_dir / COLD, tmp_path / COLD)
        ino = (tmp_path / COLD).stat().st_ino
        result, logs = _apply(tmp_path, _decision(tmp_path))
        assert result is Result.UNLINKED
        assert not (tmp_path / COLD).exists()
        assert [r["event"] for r in logs] == ["snapshot.unlinked"]
        assert logs[0]["dir_bytes"] == 100_000 - 29160
        assert logs[0]["inode"] == ino
        assert logs[0]["cause"] == "budget" and logs[0]["budget"] == 1
        assert list(tmp_path.iterdir()) == []

    def test_dry_run_keeps_the_file(self, fixtures_dir, tmp_path):
        """Dry-run logs would_unlink and leaves the file and its inode alone."""
        shutil.copyfile(fixtures_dir / COLD, tmp_path / COLD)
        ino = (tmp_path / COLD).stat().st_ino
        result, logs = _apply(tmp_path, _decision(tmp_path), dry_run=True)
        assert result is Result.WOULD_UNLINK
        assert (tmp_path / COLD).stat().st_ino == ino
        assert [r["event"] for r in logs] == ["snapshot.would_unlink"]

    def test_gone_is_normal(self, fixtures_dir, tmp_path):
        """A file the engine removed first is skipped, not an error."""
        shutil.copyfile(fixtures_dir / COLD, tmp_path / COLD)
        d = _decision(tmp_path)
        (tmp_path / COLD).unlink()
        result, logs = _apply(tmp_path, d)
        assert result is Result.GONE
        assert logs[0]["event"] == "snapshot.unlink_skipped" and logs[0]["why"] == "gone"

    def test_touched_file_is_spared(self, fixtures_dir, tmp_path):
        """A file whose mtime changed since the decision is kept."""
        shutil.copyfile(fixtures_dir / COLD, tmp_path / COLD)
        d = _decision(tmp_path)
        os.utime(tmp_path / COLD, ns=(1, 1))
        result, _ = _apply(tmp_path, d)
        assert result is Result.CHANGED
        assert (tmp_path / COLD).exists()

    def test_same_fingerprint_other_header_is_spared(self, fixtures_dir, tmp_path):
        """A rewrite that keeps inode, size and mtime but not the header is caught."""
        path = tmp_path / COLD
        shutil.copyfile(fixtures_dir / COLD, path)
        d = _decision(tmp_path)
        st = path.stat()
        with open(path, "r+b") as f:
            f.seek(12)
            f.write((99).to_bytes(4, "little"))  # hits
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        result, _ = _apply(tmp_path, d)
        assert result is Result.CHANGED
        assert path.exists() and path.stat().st_ino == st.st_ino
        assert not any(p.name.startswith(QUARANTINE_PREFIX) for p in tmp_path.iterdir())

    def test_replaced_by_rename_is_spared(self, fixtures_dir, tmp_path):
        """A file replaced by another inode under the same name is kept."""
        shutil.copyfile(fixtures_dir / COLD, tmp_path / COLD)
        d = _decision(tmp_path)
        shutil.copyfile(fixtures_dir / COLD, tmp_path / "new.tmp")
        os.rename(tmp_path / "new.tmp", tmp_path / COLD)
        result, _ = _apply(tmp_path, d)
        assert result is Result.CHANGED
        assert (tmp_path / COLD).exists()

    def test_symlink_is_refused_and_target_kept(self, fixtures_dir, tmp_path):
        """A symlink under a snapshot name is never unlinked, nor its target."""
        target = tmp_path / "target.kv"
        shutil.copyfile(fixtures_dir / COLD, target)
        cache = tmp_path / "kv"
        cache.mkdir()
        shutil.copyfile(fixtures_dir / COLD, cache / COLD)
        d = _decision(cache)
        (cache / COLD).unlink()
        (cache / COLD).symlink_to(target)
        result, logs = _apply(cache, d)
        assert result is Result.REFUSED
        assert (cache / COLD).is_symlink() and target.exists()
        assert logs[0]["event"] == "snapshot.unlink_refused"

    def test_foreign_name_is_refused(self, fixtures_dir, tmp_path):
        """A decision naming sysprompt.kv is refused whatever it says."""
        shutil.copyfile(fixtures_dir / "sysprompt.kv", tmp_path / "sysprompt.kv")
        st = (tmp_path / "sysprompt.kv").stat()
        d = Decision("sysprompt.kv", Cause.BUDGET, fingerprint(st))
        result, _ = _apply(tmp_path, d)
        assert result is Result.REFUSED
        assert (tmp_path / "sysprompt.kv").exists()

    def test_temp_name_only_for_orphan_cleanup(self, fixtures_dir, tmp_path):
        """A temp file is refused for budget and superseded causes."""
        name = "c7bc6ea3ed6986e74ae831c8542f240f92879b62.kv.tmp.12345"
        shutil.copyfile(fixtures_dir / name, tmp_path / name)
        for cause in (Cause.BUDGET, Cause.SUPERSEDED):
            d = Decision(name, cause, fingerprint((tmp_path / name).stat()))
            assert _apply(tmp_path, d)[0] is Result.REFUSED
        assert (tmp_path / name).exists()


class TestRecover:
    @staticmethod
    def _held_by_us(fixtures_dir, cache) -> PinnedDir:
        """A held file as a kill between rename and unlink leaves it: recorded."""
        held = cache / f"{QUARANTINE_PREFIX}{COLD}"
        shutil.copyfile(fixtures_dir / COLD, held)
        d = PinnedDir.at(cache)
        journal_for(d, structlog.get_logger()).hold(d, held.name, fingerprint(held.stat()))
        return d

    def test_held_file_is_put_back(self, fixtures_dir, tmp_path):
        """A file a crash left mid-delete returns under its name, unlogged as unlinked."""
        d = self._held_by_us(fixtures_dir, tmp_path)
        with capture_logs() as logs:
            assert recover(d, structlog.get_logger()) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == [COLD]
        assert "snapshot.unlinked" not in [r["event"] for r in logs]
        assert [r.get("action") for r in logs if r["event"] == "snapshot.unlink_recovered"] == [
            "put back"]  # fmt: skip

    def test_newer_file_wins_over_held_copy(self, fixtures_dir, tmp_path):
        """If the engine wrote the name again meanwhile, its file is the one kept."""
        d = self._held_by_us(fixtures_dir, tmp_path)
        (tmp_path / COLD).write_bytes(b"newer")
        with capture_logs() as logs:
            recover(d, structlog.get_logger())
        assert (tmp_path / COLD).read_bytes() == b"newer"
        assert sorted(p.name for p in tmp_path.iterdir()) == [COLD]
        assert [r.get("action") for r in logs if r["event"] == "snapshot.unlink_recovered"] == [
            "dropped: a newer file has the name"]  # fmt: skip

    def test_held_file_changed_since_it_was_recorded_is_left_alone(self, fixtures_dir, tmp_path):
        """A held file whose identity differs from the record (another file put
        under that name since) is not ours any more: left, and said so."""
        d = self._held_by_us(fixtures_dir, tmp_path)
        held = tmp_path / f"{QUARANTINE_PREFIX}{COLD}"
        held.write_bytes(held.read_bytes() + b"x")  # same inode, other size
        with capture_logs() as logs:
            assert recover(d, structlog.get_logger()) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == [held.name]
        assert [r["event"] for r in logs] == ["snapshot.recover_refused"]
