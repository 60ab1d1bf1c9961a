"""Files named like kvgroomd's own crash leftovers (#11.10): only a held file
the journal proves ours is ever put back; any other `.kvgroomd-unlinking.*`
file is left exactly as it is, and the log says so."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from kvgroomd.core.decision import Fingerprint
from kvgroomd.daemon.apply import QUARANTINE_PREFIX, journal_for, journal_path
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.testing.audit import look


def test_foreign_held_files_are_left_alone_and_logged(tmp_path, kit, start_daemon):
    """A foreign `.kvgroomd-unlinking.<sha>.kv` beside its `<sha>.kv` is not deleted,
    and one without it is not renamed into place; each is logged once."""
    cache = tmp_path / "kv"
    cache.mkdir()
    real = kit.write_snapshot(cache, b"the real one " * 40, created_at=1_700_000_000)
    twin = cache / f"{QUARANTINE_PREFIX}{real.name}"
    twin.write_bytes(real.read_bytes())  # a copy, say from a backup
    orphan_sha = "ab" * 20
    orphan = cache / f"{QUARANTINE_PREFIX}{orphan_sha}.kv"
    orphan.write_bytes(b"not even a snapshot")
    before = {p: look(p) for p in (real, twin, orphan)}
    d = start_daemon(cache_dir=cache)
    refused = d.wait_for("snapshot.recover_refused", count=2)
    assert {Path(r["path"]).name for r in refused} == {twin.name, orphan.name}
    assert {p: look(p) for p in before} == before
    assert not (cache / f"{orphan_sha}.kv").exists()
    assert d.events("snapshot.unlink_recovered") == []
    assert d.events("snapshot.unlinked") == []


def test_our_own_held_file_is_put_back_at_start(tmp_path, kit, start_daemon):
    """A held file the journal records (as a kill between rename and unlink
    leaves it; test_crash.py makes one with a real SIGKILL) is put back by the
    next start and logged; a foreign one beside it stays."""
    cache = tmp_path / "kv"
    cache.mkdir()
    snap = kit.write_snapshot(cache, b"held when killed " * 40, created_at=1_700_000_000)
    held = cache / f"{QUARANTINE_PREFIX}{snap.name}"
    os.rename(snap, held)
    pinned = PinnedDir.at(cache)
    journal_for(pinned, structlog.get_logger()).hold(pinned, held.name, Fingerprint.of(held.stat()))
    pinned.unpin()
    foreign = cache / f"{QUARANTINE_PREFIX}{'cd' * 20}.kv"
    foreign.write_bytes(b"someone else's")
    d = start_daemon(cache_dir=cache)
    (rec,) = d.events("snapshot.unlink_recovered")
    assert (Path(rec["path"]).name, rec["action"]) == (snap.name, "put back")
    assert snap.exists() and not held.exists()
    assert foreign.read_bytes() == b"someone else's"
    assert [Path(r["path"]).name for r in d.events("snapshot.recover_refused")] == [foreign.name]
    assert journal_path(cache).read_bytes() == b""  # nothing held any more
