"""End to end: the daemon process beside the engine emulator (spec sections 3 and 4)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from kvgroomd.format.header import Reason
from kvgroomd.testing.engine import Engine, conversation, ladder
from tests.integration.conftest import wait_until


def usage(directory: Path) -> int:
    """Bytes of the files in `directory` now (a file may vanish while we look)."""
    total = 0
    for p in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size
    return total


class TestLadder:
    def test_49k_prefill_keeps_the_40960_continued_and_the_evict(self, cache_dir, start_daemon):
        """The spec's 49k-token ladder ends with continued 40960 + evict 49022, three supersessions."""
        d = start_daemon(cache_dir=cache_dir)
        engine = Engine(cache_dir, budget_bytes=None, sparse=True)
        paths = ladder(engine, total_tokens=49022, step=10240)
        names = [p.name for p in paths]
        unlinked = d.wait_for("snapshot.unlinked", count=3, timeout=30)
        d.wait_for("snapshot.added", sha=names[-1][:40])
        assert d.stop() == 0
        assert sorted(p.name for p in cache_dir.iterdir()) == sorted(names[3:])
        pairs = [(r["sha"], r["superseded_by"], r["tokens"], r["superseded_by_tokens"])
                 for r in d.events("snapshot.unlinked")]  # fmt: skip
        assert pairs == [
            (names[0][:40], names[1][:40], 10240, 20480),
            (names[1][:40], names[2][:40], 20480, 30720),
            (names[2][:40], names[3][:40], 30720, 40960),
        ]
        assert all(r["cause"] == "superseded" and r["reason"] == "continued" for r in unlinked)
        sizes = {p.name: p.stat().st_size for p in paths[3:]}
        assert d.events("snapshot.unlinked")[-1]["dir_bytes"] == sizes[names[3]]

    def test_sizes_follow_the_engine_size_model(self, cache_dir, start_daemon):
        """Sparse emulated files carry the spec's sizes (157 MiB for 10240 tokens)."""
        engine = Engine(cache_dir, budget_bytes=None, sparse=True)
        path = ladder(engine, total_tokens=10241, step=10240)[0]
        assert round(path.stat().st_size / 2**20, 1) in (157.3, 157.4)


class TestEngineTouchAndConsume:
    def test_hit_is_seen_and_consume_is_a_removal(self, cache_dir, start_daemon):
        """An engine hit shows up as hits+1; a consumed snapshot as snapshot.removed."""
        d = start_daemon(cache_dir=cache_dir)
        engine = Engine(cache_dir, budget_bytes=None, sparse=True)
        small = conversation(7, 2000)
        small_path = engine.store(small.text(2000), 2000, Reason.COLD)
        d.wait_for("snapshot.added", sha=small_path.name[:40])
        assert engine.lookup(small.text(2000) + b"<\xef\xbd\x9cUser\xef\xbd\x9c>more") is not None
        d.wait_for("snapshot.updated", sha=small_path.name[:40], hits=1)
        big = conversation(8, 31000)
        big_path = engine.store(big.text(31000), 31000, Reason.SHUTDOWN)
        d.wait_for("snapshot.added", sha=big_path.name[:40])
        hit = engine.lookup(big.text(31000) + b"next turn")
        assert hit is not None and hit.consumed
        d.wait_for("snapshot.removed", sha=big_path.name[:40])
        assert d.stop() == 0
        assert d.events("snapshot.unlinked") == []
        assert sorted(p.name for p in cache_dir.iterdir()) == [small_path.name]

    def test_budget_keeps_usage_below_the_engines(self, cache_dir, start_daemon):
        """With kvgroomd's budget one snapshot below the engine's, the engine never evicts."""
        engine_budget = 1200 * 2**20
        ours = engine_budget - 300 * 2**20  # one 20k-token snapshot (~286 MiB) below
        d = start_daemon(cache_dir=cache_dir, budget=ours, protect_new=0)
        engine = Engine(cache_dir, budget_bytes=engine_budget, sparse=True)
        for seed in range(6):
            conv = conversation(100 + seed, 20000)
            path = engine.store(conv.text(20000), 20000, Reason.COLD)
            d.wait_for("snapshot.added", sha=path.name[:40])
            wait_until(lambda: usage(cache_dir) <= ours)
        # The sixth store set off a pass down to the low watermark: let it end
        # (usage under `ours` after its first unlink does not mean it is done).
        wait_until(lambda: usage(cache_dir) <= ours * 0.9)
        assert d.stop() == 0
        assert [r for r in engine.records if r.get("op") == "unlink"] == []
        evicted = d.events("snapshot.unlinked", cause="budget")
        assert len(evicted) >= 3
        assert all(r["dir_bytes"] <= ours * 0.9 for r in evicted[-1:])
