"""The emulator process (`python -m kvgroomd.testing.live`) replays a simulator
workload on a real directory and serves exactly what the simulator predicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kvgroomd.sim.generate import load_source
from kvgroomd.sim.replay import replay
from kvgroomd.testing.dirstore import read_journal

REPO = Path(__file__).resolve().parents[2]
GiB = 1 << 30


def test_live_run_matches_the_simulator(tmp_path: Path) -> None:
    """Engine alone at 2 GiB, 40 times faster than the workload's pace: the same
    tokens served, hits and lookups as the simulator; a journal of real file
    operations; the engine's own log lines; sparse files."""
    cache, journal, log = tmp_path / "kv", tmp_path / "j.jsonl", tmp_path / "engine.log"
    cmd = [sys.executable, "-m", "kvgroomd.testing.live", "--dir", str(cache),
           "--workload", "interleaved", "--seed", "2", "--budget", str(2 * GiB),
           "--time-scale", "0.025", "--journal", str(journal), "--engine-log", str(log)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    live = json.loads(done.stdout)
    sim = replay(load_source("interleaved", 2, None, 2 * GiB), None)
    assert (live["tokens_saved"], live["tokens_prompt"], live["hits"], live["lookups"]) == (
        sim.tokens_saved, sim.tokens_prompt, sim.hits, sim.lookups)
    ops = {r["op"] for r in read_journal(journal)}
    assert {"store", "hit", "unlink", "touch"} <= ops
    lines = log.read_text().splitlines()
    assert any(line.startswith("ds4-server: kv cache stored tokens=") for line in lines)
    assert any(" kv cache evicted reason=disk-cache-full " in line for line in lines)
    assert any(f"file={cache}/" in line for line in lines)
    files = list(cache.iterdir())
    assert sum(f.stat().st_size for f in files) <= 2 * GiB
    assert sum(f.stat().st_blocks * 512 for f in files) < 64 << 20  # sparse
