"""Regressions the decision core fixes (#11.5, #11.9), black-box: a real
daemon, a real SIGHUP, real files."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import yaml

OLD = 1_700_000_000  # created long ago


def test_dry_run_switched_off_by_sighup_evicts_what_it_previewed(tmp_path, kit, start_daemon):
    """dry_run: true previews budget unlinks; a SIGHUP with dry_run: false then
    indexes the whole directory again and really evicts down to the budget,
    without a restart."""
    cache = tmp_path / "kv"
    cache.mkdir()
    paths = [kit.write_snapshot(cache, f"conversation {i} ".encode() * 60, created_at=OLD + i)
             for i in range(20)]  # fmt: skip
    size = paths[0].stat().st_size
    budget = 10 * size + size // 2  # room for 10 of the 20
    d = start_daemon(cache_dir=cache, budget=budget, protect_new=0, dry_run=True,
                     reconcile_interval=3600)  # fmt: skip
    d.wait_for("reconcile.done", startup=True)  # the dry-run pass is complete
    previewed = {r["path"] for r in d.events("snapshot.would_unlink")}
    assert len(previewed) >= 10
    assert len(os.listdir(cache)) == 20
    config = yaml.safe_load(d.config_path.read_text())
    config["dry_run"] = False
    d.config_path.write_text(yaml.safe_dump(config))
    d.signal(signal.SIGHUP)
    d.wait_for("daemon.reloaded")
    done = d.wait_for("reconcile.done", startup=False)[-1]  # the reload's rescan, after its pass
    unlinked = {r["path"] for r in d.events("snapshot.unlinked", cause="budget")}
    assert unlinked == previewed  # exactly what the dry run said it would do
    assert sum(p.stat().st_size for p in cache.iterdir()) <= budget
    assert done["snapshots"] == len(os.listdir(cache))  # the whole directory, not half


def test_created_in_the_future_is_evictable(tmp_path, kit, start_daemon):
    """A snapshot whose created_at lies a day in the future (clock skew) is
    evicted under a small budget like any other, not held forever as young."""
    cache = tmp_path / "kv"
    cache.mkdir()
    future = kit.write_snapshot(cache, b"written by a skewed clock " * 40,
                                created_at=int(time.time()) + 86_400)  # fmt: skip
    d = start_daemon(cache_dir=cache, budget=1, protect_new=0)
    unlinked = d.wait_for("snapshot.unlinked", cause="budget", timeout=5)
    assert [Path(r["path"]).name for r in unlinked] == [future.name]
    assert d.events("budget.unreachable") == []
