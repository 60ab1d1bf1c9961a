"""Compression in the simulator (#14.4): a compressing engine's snapshots are
smaller by its ratio, so the same budget holds more of them, and `simulate
--compression` shows it beside the raw replay."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from kvgroomd.sim import cli
from kvgroomd.sim.engine import EngineParams
from kvgroomd.sim.replay import DEFAULT, compare
from kvgroomd.sim.workload import parse_workload

WORKLOAD = {
    "name": "two-chats",
    "engine": {"budget": "1GiB"},
    "sessions": [{"id": f"s{i}", "turns": 4, "first": 3000, "user": 400, "reply": 300,
                  "gap": "2m", "start": f"{i}m"} for i in range(6)],
}  # fmt: skip


def test_a_compressing_engine_writes_smaller_snapshots() -> None:
    """size(tokens) is the raw size divided by the ratio."""
    raw = EngineParams()
    packed = replace(raw, compression=True, compression_ratio=2.5)
    assert packed.size(10240) == pytest.approx(raw.size(10240) / 2.5, rel=1e-3)


def test_the_workload_file_takes_the_engines_compression() -> None:
    """`engine: {compression: true, compression_ratio: 2}` in a workload."""
    w = parse_workload({**WORKLOAD, "engine": {"budget": "1GiB", "compression": True,
                                               "compression_ratio": 2}})  # fmt: skip
    assert w.engine.compression and w.engine.compression_ratio == 2


def test_the_same_budget_holds_more_snapshots_compressed() -> None:
    """Replayed compressed, the budget holds more files on average and serves
    at least as many tokens from disk."""
    w = parse_workload(WORKLOAD)
    raw = compare(w, (DEFAULT,)).runs
    packed = compare(replace(w, engine=replace(w.engine, compression=True,
                                               compression_ratio=2.5)), (DEFAULT,)).runs  # fmt: skip
    for a, b in zip(raw, packed, strict=True):
        assert b.files_held > a.files_held
        assert b.tokens_saved >= a.tokens_saved


def test_simulate_compression_prints_both(tmp_path, capsys) -> None:
    """`simulate W --compression 2.5` prints the raw table and what the budget
    holds compressed; with --json, both as data."""
    path = tmp_path / "w.yaml"
    path.write_text(json.dumps(WORKLOAD))
    assert cli.main([str(path), "--compression", "2.5"]) == 0
    out = capsys.readouterr().out
    assert "snapshots 2.5x smaller" in out and "snapshots held" in out
    assert cli.main([str(path), "--compression", "2.5", "--json"]) == 0
    docs = [json.loads(part) for part in capsys.readouterr().out.replace("}\n{", "}\n\n{").split("\n\n")]
    assert docs[-1]["compression_ratio"] == 2.5
    assert cli.main([str(path), "--compression", "0.5"]) == 2
