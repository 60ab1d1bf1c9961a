"""Faults and hostile entries: the daemon keeps running, says what happened
and deletes nothing it should not (real processes, real files, real inotify)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kvgroomd.testing.audit import look, plant

# Conversation C of the fixtures: each text is a strict byte prefix of the next.
C_CONTINUED_1152 = "f0922bcf3e95efae8b6fe801839d6c6b12b7179d.kv"
C_COLD_1920 = "00919d51f332084cea61ae088886925bd2b9b2d3.kv"
C_CONTINUED_2304 = "c452d78715c5543a16af56e2eac8aa4eaf0579f7.kv"
C_CONTINUED_3456 = "501ca170cf30b6515672834eed9769583e70de8b.kv"
C_EVICT_3622 = "d2a6b33eaa3c4c352c04335f6063355184c569ea.kv"


def land(fixtures: Path, cache: Path, name: str, pid: int = 4242) -> Path:
    """Store a fixture the way the engine does: temp file, then rename."""
    tmp = cache / f"{name}.tmp.{pid}"
    shutil.copyfile(fixtures / name, tmp)
    os.rename(tmp, cache / name)
    return cache / name


class TestHostileEntries:
    def test_unchanged_invalid_entries_are_no_drift(self, cache_dir, tmp_path, start_daemon):
        """Rescans of a directory holding every kind of unusable entry repair nothing."""
        plant(cache_dir, tmp_path / "outside", "start")
        d = start_daemon(cache_dir=cache_dir, reconcile_interval=0.3)
        done = d.wait_for("reconcile.done", count=3, startup=False)
        assert [(r["repaired"], r["added"], r["changed"]) for r in done] == [(0, 0, 0)] * 3
        assert done[-1]["invalid"] == 8


class TestBudgetUnreachable:
    def test_said_once_while_young_files_hold_usage_up(self, cache_dir, kit, start_daemon):
        """Landings over a budget that only young files fill give one budget.unreachable."""
        d = start_daemon(cache_dir=cache_dir, budget=1, protect_new=3600)
        for i in range(4):
            path = kit.write_snapshot(cache_dir, f"young file {i} ".encode() * 60)
            d.wait_for("snapshot.added", sha=path.name[:40])
        assert len(d.events("budget.unreachable")) == 1
        assert d.events("budget.unreachable")[0]["why"].startswith("the rest is protected")
        assert d.events("snapshot.unlinked") == []
