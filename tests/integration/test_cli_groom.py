"""`kvgroomd groom --once`: one pass, the daemon's log lines, documented exit codes."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

SUPERSEDED = {
    "f0922bcf3e95efae8b6fe801839d6c6b12b7179d.kv",
    "c452d78715c5543a16af56e2eac8aa4eaf0579f7.kv",
}


def _legacy(manifest: dict[str, dict[str, Any]]) -> set[str]:
    return {n for n, f in manifest.items() if f["valid"] and f["abi"] == 0}


def _temps(d: Path) -> set[str]:
    return {n for n in os.listdir(d) if ".kv.tmp." in n}


def _unlinks(lines: list[dict[str, Any]], event: str) -> dict[str, str]:
    return {Path(r["path"]).name: r["cause"] for r in lines if r["event"] == event}


class TestDryRun:
    def test_dry_run_deletes_nothing_and_logs_what_it_would_do(
        self, run_cli: Any, fixture_cache: Path, cli_config: Any, kit: Any,
        manifest: dict[str, dict[str, Any]],
    ) -> None:  # fmt: skip
        """A dry run exits 0, leaves every inode in place and logs each would-be unlink."""
        cfg = cli_config(fixture_cache, cleanup={"orphan_temps": True, "stale_format": True})
        before = kit.listing(fixture_cache)
        p = run_cli("groom", "--once", "--config", cfg, "--dry-run")
        assert p.returncode == 0, p.stderr
        assert kit.listing(fixture_cache) == before
        lines = kit.json_lines(p.stdout)
        would = _unlinks(lines, "snapshot.would_unlink")
        expected = {n: "superseded" for n in SUPERSEDED}
        expected |= {n: "stale_format" for n in _legacy(manifest)}
        expected |= {n: "orphan_temps" for n in _temps(fixture_cache)}
        assert would == expected
        assert not _unlinks(lines, "snapshot.unlinked")
        assert lines[-1]["event"] == "groom.done"
        assert lines[-1]["dry_run"] is True


class TestRealPass:
    def test_unlinks_superseded_and_leaks_each_with_its_cause(
        self, run_cli: Any, fixture_cache: Path, cli_config: Any, kit: Any,
        manifest: dict[str, dict[str, Any]],
    ) -> None:  # fmt: skip
        """A real pass removes the superseded files and enabled leaks, one log line each."""
        cfg = cli_config(fixture_cache, cleanup={"orphan_temps": True, "stale_format": True})
        temps = _temps(fixture_cache)
        before = set(os.listdir(fixture_cache))
        p = run_cli("groom", "--once", "--config", cfg)
        assert p.returncode == 0, p.stderr
        lines = kit.json_lines(p.stdout)
        unlinked = _unlinks(lines, "snapshot.unlinked")
        assert Counter(unlinked.values()) == Counter(
            superseded=2, stale_format=len(_legacy(manifest)), orphan_temps=1
        )
        assert set(unlinked) == SUPERSEDED | _legacy(manifest) | temps
        assert set(os.listdir(fixture_cache)) == before - set(unlinked)
        done = lines[-1]
        assert done["by_cause"]["stale_format"]["freed"] == sum(
            manifest[n]["file_size"] for n in _legacy(manifest)
        )

    def test_cleanup_is_off_by_default(self, run_cli: Any, fixture_cache: Path, cli_config: Any,
                                       kit: Any) -> None:  # fmt: skip
        """Without the cleanup switches only supersession unlinks anything."""
        p = run_cli("groom", "--once", "--config", cli_config(fixture_cache))
        assert p.returncode == 0, p.stderr
        assert set(_unlinks(kit.json_lines(p.stdout), "snapshot.unlinked")) == SUPERSEDED

    def test_temp_files_of_live_writers_or_recent_ones_stay(
        self, run_cli: Any, fixture_cache: Path, cli_config: Any, kit: Any
    ) -> None:
        """Orphan cleanup spares a temp file whose writer runs and a fresh one whose writer died."""
        sha = "ab" * 20
        live = fixture_cache / f"{sha}.kv.tmp.{os.getpid()}"
        fresh = fixture_cache / f"{sha}.kv.tmp.{kit.dead_pid()}"
        old = time.time() - 7200
        live.write_bytes(b"KVC")
        os.utime(live, (old, old))
        fresh.write_bytes(b"KVC")
        cfg = cli_config(fixture_cache, cleanup={"orphan_temps": True, "orphan_temp_age": "1h"})
        p = run_cli("groom", "--once", "--config", cfg)
        assert p.returncode == 0, p.stderr
        unlinked = _unlinks(kit.json_lines(p.stdout), "snapshot.unlinked")
        assert live.exists() and fresh.exists()
        assert [c for c in unlinked.values() if c == "orphan_temps"] == ["orphan_temps"]

    def test_budget_eviction_brings_usage_under_the_budget(
        self, run_cli: Any, fixture_cache: Path, cli_config: Any, kit: Any
    ) -> None:
        """With a budget below usage the pass evicts by policy and ends within budget, exit 0."""
        cfg = cli_config(fixture_cache, budget="200KiB", protect_new=0)
        p = run_cli("groom", "--once", "--config", cfg)
        assert p.returncode == 0, p.stderr
        lines = kit.json_lines(p.stdout)
        assert "budget" in _unlinks(lines, "snapshot.unlinked").values()
        assert lines[-1]["within_budget"] is True
        assert lines[-1]["dir_bytes"] <= 200 * 1024


class TestExitCodes:
    def test_still_over_budget_exits_4(self, run_cli: Any, fixture_cache: Path,
                                       cli_config: Any) -> None:  # fmt: skip
        """When everything left is protected and usage stays over budget, the status is 4."""
        cfg = cli_config(fixture_cache, budget="1KiB", protect_new="3650d")
        p = run_cli("groom", "--once", "--config", cfg)
        assert p.returncode == 4
        assert '"budget.unreachable"' in p.stdout

    def test_missing_directory_exits_1(self, run_cli: Any, tmp_path: Path,
                                       cli_config: Any) -> None:  # fmt: skip
        """A fixture_cache that does not exist is a runtime failure, status 1."""
        p = run_cli("groom", "--once", "--config", cli_config(tmp_path / "nope"))
        assert p.returncode == 1
        assert '"daemon.cache_dir_missing"' in p.stdout

    def test_invalid_config_exits_3(self, run_cli: Any, tmp_path: Path) -> None:
        """A config with an unknown key is refused with status 3 and names the key."""
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(f"cache_dir: {tmp_path}\nbudgt: 1GiB\n")
        p = run_cli("groom", "--once", "--config", cfg)
        assert p.returncode == 3
        assert "budgt" in p.stderr


class TestTextfile:
    def test_pass_writes_a_parseable_textfile(
        self, run_cli: Any, fixture_cache: Path, cli_config: Any, tmp_path: Path
    ) -> None:
        """With metrics.textfile, the pass leaves a Prometheus file of its unlinks by cause."""
        prom = tmp_path / "textfile" / "kvgroomd.prom"
        prom.parent.mkdir()
        cfg = cli_config(fixture_cache, metrics={"textfile": str(prom)})
        p = run_cli("groom", "--once", "--config", cfg)
        assert p.returncode == 0, p.stderr
        samples = {
            (s.name, s.labels.get("cause") or s.labels.get("reason")): s.value
            for fam in text_string_to_metric_families(prom.read_text())
            for s in fam.samples
        }
        assert samples[("kvgroomd_unlinks_total", "superseded")] == 2
        assert samples[("kvgroomd_unlinks_total", "budget")] == 0
        assert samples[("kvgroomd_invalid_files", None)] == 5
        assert samples[("kvgroomd_other_layout_snapshots", None)] == 1  # the version-2 copy
        assert os.listdir(prom.parent) == ["kvgroomd.prom"]  # no temp file left behind
