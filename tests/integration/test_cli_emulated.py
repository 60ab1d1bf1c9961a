"""The operator tools on directories the engine emulator wrote (kvgroomd/testing/engine.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from kvgroomd.format.header import Reason

engine = pytest.importorskip("kvgroomd.testing.engine")
STEP = 1024  # continued frontiers, small so the test stays fast


@pytest.fixture
def emulated(tmp_path: Path, kit: Any) -> dict[str, Any]:
    """A directory written by the emulator: a nested continued ladder ending in an
    evict (current engine), one snapshot of an older engine (ABI 0) and a store
    whose writer crashed mid-write, two hours ago."""
    d = tmp_path / "kv"
    old = time.time() - 3 * 3600
    current = engine.Engine(d, clock=lambda: old)
    ladder = engine.ladder(current, total_tokens=4 * STEP + 300, step=STEP)
    legacy = engine.Engine(d, variant="legacy", clock=lambda: old)
    stale = legacy.store(engine.conversation(7, 900).text(900), 900, Reason.COLD)
    crashed = current.crash(engine.conversation(8, 800).text(800), 800, Reason.COLD,
                            pid=kit.dead_pid())  # fmt: skip
    os.utime(crashed, (old, old))
    return {"dir": d, "ladder": ladder, "stale": stale, "crashed": crashed}


class TestEmulatedDirectory:
    def test_ls_shows_the_ladder_chain_and_the_leaks(self, run_cli: Any,
                                                     emulated: dict[str, Any]) -> None:  # fmt: skip
        """ls puts the ladder in one chain, each continued but the last superseded, and
        flags the ABI-0 file and the crashed temp."""
        p = run_cli("ls", emulated["dir"], "--json")
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        rows = {r["name"]: r for r in doc["snapshots"]}
        ladder = [path.name for path in emulated["ladder"]]
        assert {rows[n]["chain"] for n in ladder} == {ladder[0][:40]}
        assert [rows[n]["superseded_by"] for n in ladder[:-2]] == [n[:40] for n in ladder[1:-1]]
        assert rows[ladder[-2]]["superseded_by"] is None  # the next one is an evict
        assert rows[emulated["stale"].name]["leak"] == "stale_format"
        temp = [o for o in doc["others"] if o["kind"] == "temp"]
        assert [(o["name"], o["why"]) for o in temp] == [(emulated["crashed"].name, "orphan")]

    def test_dry_run_then_real_pass(self, run_cli: Any, cli_config: Any, kit: Any,
                                    emulated: dict[str, Any]) -> None:  # fmt: skip
        """A dry run changes nothing; the real pass then removes what it announced."""
        d = emulated["dir"]
        cfg = cli_config(d, cleanup={"orphan_temps": True, "stale_format": True})
        before = kit.listing(d)
        dry = run_cli("groom", "--once", "--config", cfg, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert kit.listing(d) == before
        would = {r["path"] for r in kit.json_lines(dry.stdout)
                 if r["event"] == "snapshot.would_unlink"}  # fmt: skip
        real = run_cli("groom", "--once", "--config", cfg)
        assert real.returncode == 0, real.stderr
        done = {r["path"] for r in kit.json_lines(real.stdout) if r["event"] == "snapshot.unlinked"}
        assert done == would
        assert len(done) == len(emulated["ladder"]) - 2 + 2  # superseded + ABI 0 + temp
        assert set(os.listdir(d)) == set(before) - {Path(p).name for p in done}
