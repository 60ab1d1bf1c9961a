"""`kvgroomd ls` on directories built from the fixture set."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

SNAPSHOT_KEYS = {
    "name", "sha", "reason", "reason_code", "tokens", "hits", "size", "created_at",
    "last_used", "age_s", "idle_s", "model_id", "quant_bits", "ctx_size", "abi", "layout",
    "model_fp", "engine_visible", "ext_flags", "text_bytes", "payload_bytes", "score", "rank",
    "protected", "chain", "chain_size", "covered", "superseded_by", "leak",
}  # fmt: skip
OTHER_KEYS = {"name", "kind", "why", "detail", "size", "mtime"}
TEMP_KEYS = OTHER_KEYS | {"sha", "pid", "writer_alive", "age_s", "expected_size"}
CHAIN_C = {
    "f0922bcf3e95efae8b6fe801839d6c6b12b7179d": "continued 1152",
    "00919d51f332084cea61ae088886925bd2b9b2d3": "cold 1920",
    "c452d78715c5543a16af56e2eac8aa4eaf0579f7": "continued 2304",
    "501ca170cf30b6515672834eed9769583e70de8b": "continued 3456",
    "d2a6b33eaa3c4c352c04335f6063355184c569ea": "evict 3622",
}


def _valid(manifest: dict[str, dict[str, Any]]) -> set[str]:
    return {n for n, f in manifest.items() if f["valid"]}


def _ls_json(run_cli: Any, *args: object) -> dict[str, Any]:
    p = run_cli("ls", *args, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def doc(run_cli: Any, shared_fixture_cache: Path) -> dict[str, Any]:
    """`ls --json` of the fixture directory (default sort: rank)."""
    return _ls_json(run_cli, shared_fixture_cache)


@pytest.fixture(scope="module")
def table(run_cli: Any, shared_fixture_cache: Path) -> str:
    """`ls` of the fixture directory, as printed."""
    p = run_cli("ls", shared_fixture_cache)
    assert p.returncode == 0, p.stderr
    return p.stdout


class TestTable:
    def test_every_snapshot_is_a_row_and_every_other_file_is_listed_apart(
        self, table: str, shared_fixture_cache: Path, manifest: dict[str, dict[str, Any]]
    ) -> None:
        """The table has one row per valid snapshot and lists the rest under "not snapshots"."""
        rows, _, others = table.partition("not snapshots")
        for name in _valid(manifest):
            assert name[:12] in rows
        for name in set(os.listdir(shared_fixture_cache)) - _valid(manifest):
            assert name in others
        assert "sysprompt.kv" not in rows

    def test_abi0_rows_are_flagged_invisible(
        self, table: str, manifest: dict[str, dict[str, Any]]
    ) -> None:
        """Each ABI-0 snapshot's row says current engines cannot see it."""
        rows = {line[:12]: line for line in table.splitlines()}
        legacy = [n for n, f in manifest.items() if f["valid"] and f["abi"] == 0]
        assert legacy
        for name in legacy:
            assert "invisible to current engines" in rows[name[:12]]

    def test_superseded_rows_name_their_successor(self, table: str) -> None:
        """The row of a superseded continued snapshot names the snapshot that supersedes it."""
        rows = {line[:12]: line for line in table.splitlines()}
        assert "superseded by 00919d51f332" in rows["f0922bcf3e95"]
        assert "superseded by 501ca170cf30" in rows["c452d78715c5"]
        assert "superseded" not in rows["501ca170cf30"]


class TestJson:
    def test_schema_fields_are_exactly_the_documented_ones(self, doc: dict[str, Any]) -> None:
        """Every object in `ls --json` has exactly the keys docs/operator-tools.md lists."""
        assert set(doc) == {"schema", "directory", "now", "policy", "budget", "snapshots",
                            "others"}  # fmt: skip
        assert doc["schema"] == "kvgroomd.ls/1"
        assert set(doc["policy"]) == {"name", "params"}
        for row in doc["snapshots"]:
            assert set(row) == SNAPSHOT_KEYS
        for other in doc["others"]:
            assert set(other) == (TEMP_KEYS if other["kind"] == "temp" else OTHER_KEYS)

    def test_snapshots_and_others_match_the_manifest(
        self, doc: dict[str, Any], manifest: dict[str, dict[str, Any]]
    ) -> None:
        """Valid files are snapshots with the manifest's header values; the rest are others."""
        rows = {r["name"]: r for r in doc["snapshots"]}
        assert set(rows) == _valid(manifest)
        for name, r in rows.items():
            f = manifest[name]
            assert (r["reason"], r["tokens"], r["hits"], r["size"], r["abi"]) == (
                f["reason_name"], f["tokens"], f["hits"], f["file_size"], f["abi"])  # fmt: skip
            assert r["engine_visible"] is (f["abi"] == 2)
            assert r["leak"] == ("stale_format" if f["abi"] == 0 else None)
        kinds = {o["name"]: o["kind"] for o in doc["others"]}
        assert kinds["sysprompt.kv"] == "foreign"
        assert kinds["17e4542633d0d2269c3cd22b7772fa4c668e442f.kv"] == "unknown_format"
        # version 2 with bytes 20-23 = 02 00 00 00: a raw codec-at-21 file, which
        # the upstream engine (the one a config names by default) does not read
        assert kinds["ca78cdb073403b0385baf73204df135399ab4fdf.kv"] == "other_layout"
        assert kinds["27d31d70e91b07659d982d853e30c09faf319d5c.kv"] == "invalid"
        assert sorted(k for k in kinds.values() if k == "temp") == ["temp"]
        assert len(kinds) == len(manifest) - len(rows)

    def test_chain_c_is_one_chain_rooted_at_its_shortest_member(self, doc: dict[str, Any]) -> None:
        """The five nested files of conversation C share one chain id, the shortest one's sha."""
        rows = {r["sha"]: r for r in doc["snapshots"]}
        root = "f0922bcf3e95efae8b6fe801839d6c6b12b7179d"
        for sha in CHAIN_C:
            assert (rows[sha]["chain"], rows[sha]["chain_size"]) == (root, 5)
        assert {s for s, r in rows.items() if r["chain"]} == set(CHAIN_C)
        assert rows[root]["superseded_by"] == "00919d51f332084cea61ae088886925bd2b9b2d3"
        assert rows["d2a6b33eaa3c4c352c04335f6063355184c569ea"]["superseded_by"] is None
        assert rows["00919d51f332084cea61ae088886925bd2b9b2d3"]["superseded_by"] is None

    def test_ranks_are_the_eviction_order_and_agent_files_are_protected(
        self, doc: dict[str, Any]
    ) -> None:
        """Ranks run 1..n by ascending score; agent-session files have no rank or score."""
        rows = doc["snapshots"]
        ranked = [r for r in rows if r["rank"] is not None]
        assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
        scores = [r["score"] for r in ranked]
        assert scores == sorted(scores)
        agent = [r for r in rows if r["reason"] == "agent-session"]
        assert agent and all(r["protected"] == "reason" and r["rank"] is None for r in agent)

    def test_config_supplies_policy_and_budget(self, run_cli: Any, shared_fixture_cache: Path,
                                               cli_config: Any) -> None:  # fmt: skip
        """With --config, the JSON reports that file's policy and budget."""
        cfg = cli_config(shared_fixture_cache, budget="300KiB", policy="ds4")
        doc = _ls_json(run_cli, "--config", cfg)
        assert (doc["budget"], doc["policy"]["name"]) == (300 * 1024, "ds4")
        assert doc["directory"] == str(shared_fixture_cache)


class TestSorting:
    @pytest.mark.parametrize("key", ["size", "tokens", "hits"])
    def test_sort_keys_order_ascending_and_reverse_flips(
        self, cli_inproc: Any, shared_fixture_cache: Path, key: str
    ) -> None:
        """`--sort KEY` lists ascending by KEY and `--reverse` descending."""
        d = shared_fixture_cache
        _, out_up, _ = cli_inproc("ls", d, "--json", "--sort", key)
        _, out_down, _ = cli_inproc("ls", d, "--json", "--sort", key, "--reverse")
        up = [r[key] for r in json.loads(out_up)["snapshots"]]
        down = [r[key] for r in json.loads(out_down)["snapshots"]]
        assert up == sorted(up)
        assert down == sorted(up, reverse=True)


# Root ignores file modes; without these capabilities it obeys them like anyone.
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-chown")


class TestReadOnly:
    def test_works_on_a_directory_the_user_can_only_read(self, run_cli: Any, fixture_cache: Path,
                                                         kit: Any) -> None:  # fmt: skip
        """ls and stats succeed in a read-only directory and leave every entry as it was."""
        prefix: tuple[str, ...] = ()
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: modes would not apply")
            prefix = NO_DAC
        for p in fixture_cache.iterdir():
            p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        fixture_cache.chmod(0o555)
        try:
            before = kit.listing(fixture_cache)
            ls = run_cli("ls", fixture_cache, prefix=prefix)
            st = run_cli("stats", fixture_cache, "--json", prefix=prefix)
            probe = run_cli("groom", "--once", "--cache-dir", fixture_cache, prefix=prefix)
            after = kit.listing(fixture_cache)
        finally:
            fixture_cache.chmod(0o755)
        assert ls.returncode == 0, ls.stderr
        assert st.returncode == 0, st.stderr
        assert "00919d51f332" in ls.stdout
        assert after == before
        # The same restrictions do stop a command that writes: the test has teeth.
        assert probe.returncode == 1
        assert "snapshot.unlink_failed" in probe.stdout


class TestErrors:
    def test_missing_directory_exits_1(self, run_cli: Any, tmp_path: Path) -> None:
        """A directory that does not exist is a runtime failure, exit status 1."""
        p = run_cli("ls", tmp_path / "nope")
        assert p.returncode == 1
        assert "cannot read" in p.stderr

    @pytest.mark.parametrize("args", [[], ["--sort", "bogus"], ["--budget", "8XB"]])
    def test_usage_errors_exit_2(self, cli_inproc: Any, shared_fixture_cache: Path,
                                 args: list[str]) -> None:  # fmt: skip
        """No directory, an unknown sort key or a malformed size is a usage error, status 2."""
        code, _, err = cli_inproc("ls", *([shared_fixture_cache] if args else []), *args)
        assert code == 2
        assert "usage:" in err
