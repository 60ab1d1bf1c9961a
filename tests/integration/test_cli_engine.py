"""The engine's budget on the command line, and the config's engine block in
`check-config`, `groom`, `ls` and `stats`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvgroomd.cli import build_parser

MiB = 2**20


@pytest.mark.parametrize("command", ["run", "groom", "ls", "stats"])
@pytest.mark.parametrize("flag", ["--engine-budget", "--kv-disk-space-mb"])
def test_every_command_takes_the_engine_budget(command: str, flag: str) -> None:
    """`--engine-budget N` (alias `--kv-disk-space-mb N`, the engine's own
    flag) reads a bare number as MiB and a size with a unit as that size."""
    where = ["DIR"] if command in ("ls", "stats") else ["--cache-dir", "DIR"]
    if command == "groom":
        where.append("--once")
    args = build_parser().parse_args([command, *where, flag, "4096"])
    assert args.engine_budget == 4096 * MiB
    args = build_parser().parse_args([command, *where, flag, "8GiB"])
    assert args.engine_budget == 8 * 2**30


def test_a_bad_engine_budget_is_a_usage_error(run_cli: Any, tmp_path: Path) -> None:
    """0 or a word exits 2 with argparse's message naming the option."""
    for bad in ("0", "lots"):
        p = run_cli("groom", "--once", "--cache-dir", tmp_path, "--engine-budget", bad)
        assert p.returncode == 2, p.stderr
        assert "--engine-budget" in p.stderr


def test_stats_reports_the_engine_budget(run_cli: Any, tmp_path: Path) -> None:
    """`stats --json --kv-disk-space-mb 4096` shows it in bytes; the config's
    value is used when no flag is given, and the flag overrides it."""
    cache = tmp_path / "kv"
    cache.mkdir()
    p = run_cli("stats", cache, "--json", "--kv-disk-space-mb", "4096")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["budget"]["engine"] == 4096 * MiB
    cfg = tmp_path / "kvgroomd.yaml"
    cfg.write_text(f"cache_dir: {cache}\nengine_budget: 2GiB\n")
    p = run_cli("stats", "--config", cfg, "--json")
    assert json.loads(p.stdout)["budget"]["engine"] == 2 * 2**30
    p = run_cli("stats", "--config", cfg, "--json", "--engine-budget", "1024")
    assert json.loads(p.stdout)["budget"]["engine"] == 1024 * MiB


def test_check_config_warns_of_the_moved_quant_key(run_cli: Any, tmp_path: Path) -> None:
    """The old top-level key still validates (exit 0); the warning goes to
    stderr with file and line, stdout stays the effective config (JSON)."""
    cfg = tmp_path / "kvgroomd.yaml"
    cfg.write_text(f"cache_dir: {tmp_path}\nreject_different_quant: true\n")
    p = run_cli("check-config", cfg)
    assert p.returncode == 0, p.stderr
    effective = json.loads(p.stdout)
    assert effective["engine"]["reject_different_quant"] is True
    assert f"{cfg}:2: reject_different_quant: deprecated, now engine.reject_different_quant" in p.stderr


def test_groom_logs_the_warning_and_runs(run_cli: Any, tmp_path: Path) -> None:
    """`groom` with a config using the old key logs one config.warning line
    and grooms as asked (the quant rule applies)."""
    cache = tmp_path / "kv"
    cache.mkdir()
    cfg = tmp_path / "kvgroomd.yaml"
    cfg.write_text(f"cache_dir: {cache}\nreject_different_quant: true\nlog:\n  format: json\n")
    p = run_cli("groom", "--once", "--config", cfg, "--engine-budget", "4096")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    warnings = [x for x in lines if x["event"] == "config.warning"]
    assert len(warnings) == 1
    assert "engine.reject_different_quant" in warnings[0]["warning"]
