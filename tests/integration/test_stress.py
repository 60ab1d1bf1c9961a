"""The real daemon against the engine emulator, a separate process on the same
directory, over thousands of operations: nothing wrongly deleted, no drift.

The audit (kvgroomd/testing/audit.py) replays the emulator's journal and the
daemon's log: every version of every name ended exactly one way, every unlink
named an engine-written snapshot and was justified when it was made, and the
files planted beside the engine's (temp, foreign, invalid, agent, unknown
format, symlink, FIFO, directory) are untouched. `-m soak` runs it longer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kvgroomd.testing.audit import Limits, Report, audit, plant, timestamp, valid_snapshots, vm_rss
from kvgroomd.testing.engine import read_journal

GiB = 1024**3
MiB = 1024**2
BUDGET = 4 * GiB
LOW_WATERMARK = 0.9
PROTECT_NEW = 2.0
RECONCILE_S = 2.0


@dataclass(frozen=True)
class Phase:
    """One emulator process: an engine generation, its budget and bounds."""

    variant: str
    engine_budget: int
    ops: int
    seconds: float
    seed: int


@dataclass
class Run:
    """What a stress run produced."""

    report: Report
    ops: int
    rss: list[int] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    quiet: dict[str, Any] = field(default_factory=dict)
    on_disk: tuple[int, int] = (0, 0)
    exit_status: int | None = None
    stderr: str = ""
    seconds: list[float] = field(default_factory=list)  # each phase, then quiescence


def _engine(cache: Path, journal: Path, phase: Phase) -> subprocess.Popen[str]:
    cmd = [
        sys.executable, "-m", "kvgroomd.testing.engine", "--dir", str(cache),
        "--seed", str(phase.seed), "--ops", str(phase.ops), "--seconds", str(phase.seconds),
        "--budget", str(phase.engine_budget), "--variant", phase.variant,
        "--journal", str(journal),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stress(tmp_path: Path, start_daemon: Any, phases: list[Phase]) -> Run:
    """Run the phases one after another against one daemon; audit the result."""
    cache, journal, outside = tmp_path / "kv", tmp_path / "journal.jsonl", tmp_path / "outside"
    cache.mkdir()
    planted = plant(cache, outside, "start")
    d = start_daemon(cache_dir=cache, budget=BUDGET, low_watermark=LOW_WATERMARK,
                     protect_new=PROTECT_NEW, reconcile_interval=RECONCILE_S)  # fmt: skip
    pid = d.proc.pid
    rss: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.5):
            if (v := vm_rss(pid)) is not None:
                rss.append(v)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ops = 0
    seconds = []
    for i, phase in enumerate(phases):
        began = time.monotonic()
        engine = _engine(cache, journal, phase)
        if i == 0:  # some hostile entries arrive while both are busy (the event path)
            time.sleep(min(3.0, phase.seconds / 3))
            planted.update(plant(cache, outside, "running"))
        out, err = engine.communicate(timeout=phase.seconds + 60)
        assert engine.returncode == 0, err
        ops += json.loads(out)["ops"]
        seconds.append(time.monotonic() - began)
    ended, began = time.time(), time.monotonic()
    # Quiescence: a rescan after the engine stopped and the young files aged
    # found nothing to repair, and usage was within the budget.
    deadline = time.monotonic() + 30
    quiet: dict[str, Any] = {}
    while time.monotonic() < deadline and not quiet:
        for rec in d.events("reconcile.done", startup=False, repaired=0):
            if timestamp(rec) > ended + PROTECT_NEW and rec["dir_bytes"] <= BUDGET:
                quiet = rec
                break
        time.sleep(0.2)
    seconds.append(time.monotonic() - began)
    on_disk = valid_snapshots(cache)
    sampling.set()
    sampler.join()
    status = d.stop()
    with open(tmp_path / "daemon.jsonl", "w", encoding="utf-8") as fp:  # for a post-mortem
        fp.writelines(json.dumps(r) + "\n" for r in d.events())
    (tmp_path / "rss.json").write_text(json.dumps(rss))
    limits = Limits(BUDGET, LOW_WATERMARK, PROTECT_NEW)
    report = audit(read_journal(journal), d.events(), cache, limits, bystanders=planted)
    return Run(report, ops, rss, d.events(), quiet, on_disk, status, d.stderr, seconds)


def check(run: Run, *, rss_growth: int = 16 * MiB) -> None:
    """The invariants of the issue, (a) to (d); RSS may grow by `rss_growth`
    from the first quarter of the run (imports, caches warming) to the second half."""
    # (a), (b): the audit of every version, unlink and planted file.
    assert run.report.problems == [], run.report.problems
    assert run.report.figures["unlinked_superseded"] > 0
    assert run.report.figures["unlinked_budget"] > 0
    # (c): after quiescence the index equals the directory and usage is within budget.
    assert run.quiet, "no clean rescan within 30 s of the engine stopping"
    assert (run.quiet["snapshots"], run.quiet["dir_bytes"]) == run.on_disk
    assert run.quiet["dir_bytes"] <= BUDGET
    # (d): no crash, no unhandled exception, no observer death, RSS flat.
    assert run.exit_status == 0
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    events = {r.get("event") for r in run.records}
    assert not events & {"observer.died", "daemon.cache_dir_error", "<not json>"}
    errors = [r for r in run.records if r.get("level") in ("error", "critical")]
    assert errors == []
    half = len(run.rss) // 2
    assert half >= 4, run.rss
    warm, late = max(run.rss[: half // 2 + 1]), max(run.rss[half:])
    assert late - warm < rss_growth, (warm, late)


def _summary(run: Run) -> str:
    f = run.report.figures
    first, last = run.rss[0] / MiB, run.rss[-1] / MiB
    skipped = sum(1 for r in run.records if r.get("event") == "snapshot.unlink_skipped")
    return (
        f"ops={run.ops} engine_stores={f['engine_stores']} engine_unlinks={f['engine_unlinks']} "
        f"superseded={f['unlinked_superseded']} budget={f['unlinked_budget']} "
        f"skipped={skipped} stale_budget={f['budget_unlinks_under_target']} "
        f"rss_start={first:.1f}MiB rss_end={last:.1f}MiB "
        f"rss_max={max(run.rss) / MiB:.1f}MiB samples={len(run.rss)} "
        f"seconds={[round(x, 1) for x in run.seconds]}"
    )


def test_daemon_beside_a_busy_engine_deletes_nothing_wrongly(tmp_path, start_daemon, capsys):
    """Against thousands of engine operations of both generations, every
    kvgroomd unlink was justified and logged, and nothing else was lost."""
    run = stress(tmp_path, start_daemon, [
        Phase("current", BUDGET + GiB // 2, ops=1500, seconds=18, seed=11),
        Phase("legacy", BUDGET + 2 * GiB, ops=700, seconds=9, seed=12),
    ])  # fmt: skip
    with capsys.disabled():
        print(f"\nstress: {_summary(run)}")
    check(run)
    assert run.ops >= 1500


@pytest.mark.soak
def test_soak(tmp_path, start_daemon, capsys):
    """Over about ten minutes the same invariants hold and RSS stays flat."""
    seconds = float(os.environ.get("KVGROOMD_SOAK_SECONDS", "600"))
    phases = []
    for i in range(6):
        variant = "legacy" if i % 3 == 2 else "current"
        margin = GiB // 2 if i % 2 == 0 else 2 * GiB
        phases.append(Phase(variant, BUDGET + margin, ops=10**7, seconds=seconds / 6, seed=100 + i))
    run = stress(tmp_path, start_daemon, phases)
    with capsys.disabled():
        print(f"\nsoak: {_summary(run)}")
    check(run, rss_growth=8 * MiB)
