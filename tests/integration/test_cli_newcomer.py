"""Command-line conventions a new user expects (issue 12): real processes, real files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kvgroomd.format.header import Reason
from kvgroomd.ops.report import per_gib

SUPERSEDED = {  # chain C's two continued files: the fixture's supersession
    "f0922bcf3e95efae8b6fe801839d6c6b12b7179d.kv": 19176,
    "c452d78715c5543a16af56e2eac8aa4eaf0579f7.kv": 34152,
}
DAY = 86400


class TestRunAndGroom:
    def test_run_without_arguments_prints_usage_and_exits_2(self, run_cli: Any) -> None:
        """`kvgroomd run` with nothing to work on is a usage error: usage on stderr, status 2
        (not 3, "invalid configuration", which names a file)."""
        p = run_cli("run", timeout=20)
        assert p.returncode == 2
        assert p.stderr.startswith("usage: kvgroomd run")
        assert "--cache-dir DIR" in p.stderr.splitlines()[-1]

    def test_groom_runs_one_pass_without_once(self, run_cli: Any, fixture_cache: Path,
                                              kit: Any) -> None:  # fmt: skip
        """`kvgroomd groom --cache-dir DIR` is one pass: it supersedes and exits 0."""
        p = run_cli("groom", "--cache-dir", fixture_cache)
        assert p.returncode == 0, p.stderr
        lines = kit.json_lines(p.stdout)
        assert lines[-1]["event"] == "groom.done"
        assert not (set(SUPERSEDED) & set(os.listdir(fixture_cache)))

    def test_once_is_still_accepted(self, run_cli: Any, fixture_cache: Path) -> None:
        """Scripts written for `groom --once` keep working."""
        assert run_cli("groom", "--once", "--cache-dir", fixture_cache).returncode == 0

    def test_groom_without_a_directory_is_a_usage_error(self, run_cli: Any) -> None:
        """`groom` alone: usage, status 2."""
        p = run_cli("groom")
        assert p.returncode == 2
        assert p.stderr.startswith("usage: kvgroomd groom")

    def test_dry_run_summary_totals_what_it_would_free(self, run_cli: Any, fixture_cache: Path,
                                                       kit: Any) -> None:  # fmt: skip
        """groom.done of a dry run says how many files and bytes the real pass would free,
        in total and by cause, and deletes nothing."""
        before = kit.listing(fixture_cache)
        p = run_cli("groom", "--cache-dir", fixture_cache, "--dry-run")
        assert p.returncode == 0, p.stderr
        assert kit.listing(fixture_cache) == before
        done = kit.json_lines(p.stdout)[-1]
        assert done["event"] == "groom.done" and done["dry_run"] is True
        assert done["would_unlink"] == len(SUPERSEDED)
        assert done["would_free"] == sum(SUPERSEDED.values())
        assert done["by_cause"]["superseded"]["would_free"] == sum(SUPERSEDED.values())
        assert done["by_cause"]["superseded"]["unlinked"] == 0

    def test_a_real_pass_has_no_would_keys(self, run_cli: Any, fixture_cache: Path,
                                           kit: Any) -> None:  # fmt: skip
        """The would-be totals are a dry run's: a real pass reports what it freed."""
        done = kit.json_lines(run_cli("groom", "--cache-dir", fixture_cache).stdout)[-1]
        assert "would_free" not in done
        assert done["by_cause"]["superseded"]["freed"] == sum(SUPERSEDED.values())


class TestSimulatePlot:
    def test_plot_without_matplotlib_is_one_line_with_the_install_hint(
        self, tmp_path: Path
    ) -> None:
        """`simulate --plot` where matplotlib cannot be imported: one line naming the extra,
        status 1, no traceback, and no simulation run first."""
        blocker = tmp_path / "blocker"
        blocker.mkdir()
        (blocker / "matplotlib.py").write_text("raise ImportError('No module named matplotlib')\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
            str(blocker), os.environ.get("PYTHONPATH")]))}  # fmt: skip
        root = Path(__file__).resolve().parents[2]
        started = time.monotonic()
        p = subprocess.run(
            [sys.executable, "-m", "kvgroomd", "simulate", str(root / "scenarios/mixed-month.yaml"),
             "--plot", str(tmp_path / "p.png")],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert p.returncode == 1
        assert p.stderr.splitlines() == [
            "kvgroomd simulate: --plot needs matplotlib: pip install 'kvgroomd[plot]'"
        ]
        assert p.stdout == ""
        assert time.monotonic() - started < 10  # the month was not replayed first
        assert not (tmp_path / "p.png").exists()


@pytest.fixture
def aged_cache(tmp_path: Path, kit: Any) -> Path:
    """Fresh, 3-day-old and 30-day-old snapshots of several reasons."""
    d = tmp_path / "aged"
    d.mkdir()
    now = int(time.time())
    for i, (reason, age) in enumerate([(Reason.COLD, 0), (Reason.CONTINUED, 3 * DAY),
                                       (Reason.CONTINUED, 30 * DAY), (Reason.EVICT, 30 * DAY),
                                       (Reason.EVICT, 3 * DAY)]):  # fmt: skip
        kit.write_snapshot(d, b"%02d ls filter text " % i * 40, reason=reason,
                           created_at=now - age - 600)  # fmt: skip
    return d


def _names(run_cli: Any, *args: object) -> list[str]:
    p = run_cli("ls", *args)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


class TestLs:
    def test_quiet_prints_file_names_only(self, run_cli: Any, aged_cache: Path) -> None:
        """`ls -q` prints one existing file name a line and nothing else (for xargs)."""
        names = _names(run_cli, aged_cache, "-q")
        assert sorted(names) == sorted(n for n in os.listdir(aged_cache) if n.endswith(".kv"))
        assert all(re.fullmatch(r"[0-9a-f]{40}\.kv", n) for n in names)

    def test_filter_by_reason(self, run_cli: Any, aged_cache: Path) -> None:
        """`--reason` keeps those reasons only; repeatable."""
        assert len(_names(run_cli, aged_cache, "-q", "--reason", "continued")) == 2
        assert len(_names(run_cli, aged_cache, "-q", "--reason", "continued",
                          "--reason", "cold")) == 3  # fmt: skip

    def test_filter_by_age(self, run_cli: Any, aged_cache: Path) -> None:
        """`--older-than` / `--newer-than` select by age since created_at, with durations."""
        assert len(_names(run_cli, aged_cache, "-q", "--older-than", "7d")) == 2
        assert len(_names(run_cli, aged_cache, "-q", "--newer-than", "1d")) == 1
        assert len(_names(run_cli, aged_cache, "-q", "--older-than", "1d",
                          "--newer-than", "7d", "--reason", "evict")) == 1  # fmt: skip

    def test_filters_apply_to_the_table_and_json(self, run_cli: Any, aged_cache: Path) -> None:
        """The table and --json show the selection; the table says how much it holds."""
        table = _names(run_cli, aged_cache, "--reason", "evict")
        rows = [line for line in table if re.match(r"[0-9a-f]{12} ", line)]
        assert len(rows) == 2 and all(" evict " in r for r in rows)
        assert any(line.startswith("2 of 5 shown (") for line in table)
        p = run_cli("ls", aged_cache, "--json", "--older-than", "7d")
        assert len(__import__("json").loads(p.stdout)["snapshots"]) == 2

    def test_an_unknown_reason_is_a_usage_error(self, run_cli: Any, aged_cache: Path) -> None:
        """`--reason bogus` exits 2 and lists the reasons."""
        p = run_cli("ls", aged_cache, "--reason", "bogus")
        assert p.returncode == 2
        assert "agent-session" in p.stderr

    def test_value_is_tokens_per_gib_not_an_exponent(self, run_cli: Any, aged_cache: Path,
                                                     shared_fixture_cache: Path) -> None:  # fmt: skip
        """The value column is prefill tokens per GiB held, in plain numbers: a fresh file
        reads in thousands, a long-idle one reads 0; never 1.34e-61."""
        for d in (aged_cache, shared_fixture_cache):
            out = run_cli("ls", d).stdout
            assert "TOK/GiB" in out.splitlines()[0]
            assert not re.search(r"\de-\d", out)
        fresh = next(line for line in _names(run_cli, aged_cache) if " cold " in line)
        assert re.search(r" \d+(\.\d)?[kM] +\d+ *$", fresh), fresh

    @pytest.mark.parametrize(("score", "text"), [
        (0.0, "0"), (1e-61, "0"), (5e-11, "0.05"), (2e-8, "21"), (2e-6, "2.1k"),
        (3e-5, "32k"), (1e-3, "1.1M"),
    ])  # fmt: skip
    def test_per_gib_wording(self, score: float, text: str) -> None:
        """Tokens per byte shown per GiB: M, k, whole numbers, two decimals, then 0."""
        assert per_gib(score) == text
