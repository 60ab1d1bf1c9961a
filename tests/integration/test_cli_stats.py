"""`kvgroomd stats` on the fixture directory."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def stats(run_cli: Any, shared_fixture_cache: Path) -> dict[str, Any]:
    """`stats --json --budget 300KiB` of the fixture directory."""
    p = run_cli("stats", shared_fixture_cache, "--json", "--budget", "300KiB")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _valid(manifest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in manifest.values() if f["valid"]]


class TestTotals:
    def test_counts_and_bytes_by_reason_match_the_manifest(
        self, stats: dict[str, Any], manifest: dict[str, dict[str, Any]]
    ) -> None:
        """Files and bytes per reason are those of the manifest's valid files."""
        files = Counter(f["reason_name"] for f in _valid(manifest))
        size: Counter[str] = Counter()
        for f in _valid(manifest):
            size[f["reason_name"]] += f["file_size"]
        got = {r: (v["count"], v["bytes"]) for r, v in stats["by_reason"].items() if v["count"]}
        assert got == {r: (files[r], size[r]) for r in files}
        assert stats["snapshots"]["bytes"] == sum(size.values())

    def test_budget_is_compared_with_usage(self, stats: dict[str, Any]) -> None:
        """Bytes in use are reported against the budget, with the excess."""
        b = stats["budget"]
        assert b["limit"] == 300 * 1024
        assert b["used"] == stats["snapshots"]["bytes"]
        assert b["over"] == b["used"] - b["limit"]
        assert b["fraction"] == pytest.approx(b["used"] / b["limit"])

    def test_chain_c_is_the_one_chain_and_two_files_are_superseded(
        self, stats: dict[str, Any], manifest: dict[str, dict[str, Any]]
    ) -> None:
        """One chain of five snapshots; its two superseded continued files are counted."""
        c = stats["chains"]
        assert (c["count"], c["snapshots"]) == (1, 5)
        superseded = ["f0922bcf3e95efae8b6fe801839d6c6b12b7179d.kv",
                      "c452d78715c5543a16af56e2eac8aa4eaf0579f7.kv"]  # fmt: skip
        assert c["superseded"] == {
            "count": 2, "bytes": sum(manifest[n]["file_size"] for n in superseded),
        }  # fmt: skip

    def test_invalid_files_are_counted_with_their_bytes(
        self, stats: dict[str, Any], manifest: dict[str, dict[str, Any]]
    ) -> None:
        """The five damaged files are counted as invalid, with their sizes; the
        version-2 copy (a raw codec-at-21 file, which the upstream engine does
        not read) is counted apart, as another layout."""
        other = "ca78cdb073403b0385baf73204df135399ab4fdf.kv"
        bad = [f for n, f in manifest.items() if not f["valid"] and n.endswith(".kv")
               and n not in ("sysprompt.kv", other)]  # fmt: skip
        assert stats["invalid"]["count"] == len(bad) == 5
        assert stats["invalid"]["bytes"] == sum(f["file_size"] for f in bad)
        size = manifest[other]["file_size"]
        assert stats["other_layouts"] == {
            "count": 1, "bytes": size, "by_layout": {"codec-at-21": {"count": 1, "bytes": size}},
        }  # fmt: skip

    def test_leaks_are_abi0_files_and_crash_left_temps(
        self, stats: dict[str, Any], manifest: dict[str, dict[str, Any]]
    ) -> None:
        """Leaks list the ABI-0 snapshots and the orphaned temp file, each with its bytes."""
        legacy = [f["file_size"] for f in _valid(manifest) if f["abi"] == 0]
        temp = [f["file_size"] for n, f in manifest.items() if ".kv.tmp." in n]
        assert stats["leaks"]["stale_format"] == {"count": len(legacy), "bytes": sum(legacy)}
        assert stats["leaks"]["orphan_temps"] == {"count": 1, "bytes": sum(temp)}
        assert stats["temps_writing"]["count"] == 0


class TestHuman:
    def test_human_output_names_every_section(self, run_cli: Any,
                                              shared_fixture_cache: Path) -> None:  # fmt: skip
        """The plain output has lines for budget, reasons, chains, invalid files and leaks."""
        p = run_cli("stats", shared_fixture_cache, "--budget", "1GiB")
        assert p.returncode == 0, p.stderr
        for word in ("budget", "continued", "chains", "invalid", "stale_format", "orphan temps"):
            assert word in p.stdout
        assert "of 1.0 GiB" in p.stdout

    def test_temp_of_a_running_writer_is_not_a_leak(self, run_cli: Any, tmp_path: Path,
                                                    kit: Any) -> None:  # fmt: skip
        """A temp file whose writer runs counts as being written, not as a leak."""
        (tmp_path / f"{'cd' * 20}.kv.tmp.{os.getpid()}").write_bytes(b"x" * 100)
        kit.write_snapshot(tmp_path, b"hello " * 100)
        p = run_cli("stats", tmp_path, "--json")
        st = json.loads(p.stdout)
        assert st["temps_writing"] == {"count": 1, "bytes": 100}
        assert st["leaks"]["orphan_temps"]["count"] == 0
        assert st["snapshots"]["count"] == 1
