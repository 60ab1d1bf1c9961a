"""`kvgroomd tail` on real logs written by `kvgroomd groom --once`."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest

from kvgroomd.config import format_size


@pytest.fixture(scope="module")
def groom_log(run_cli: Any, tmp_path_factory: pytest.TempPathFactory,
              shared_fixture_cache: Path) -> Path:  # fmt: skip
    """The JSON log of a real pass with every cleanup on and a budget that evicts."""
    base = tmp_path_factory.mktemp("tail")
    cache = base / "cache"
    shutil.copytree(shared_fixture_cache, cache)
    cfg = base / "kvgroomd.yaml"
    cfg.write_text(json.dumps({
        "cache_dir": str(cache), "budget": "200KiB", "protect_new": 0,
        "log": {"format": "json"}, "cleanup": {"orphan_temps": True, "stale_format": True},
    }))  # fmt: skip
    p = run_cli("groom", "--once", "--config", cfg)
    assert p.returncode == 0, p.stderr
    log = base / "kvgroomd.log"
    log.write_text(p.stdout)
    return log


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _freed_by_cause(log: Path) -> tuple[Counter[str], Counter[str]]:
    n: Counter[str] = Counter()
    b: Counter[str] = Counter()
    for r in _records(log):
        if r["event"] == "snapshot.unlinked":
            n[r["cause"]] += 1
            b[r["cause"]] += r["size"]
    return n, b


class TestRender:
    def test_one_line_per_record_then_a_summary_by_cause(self, cli_inproc: Any,
                                                         groom_log: Path) -> None:  # fmt: skip
        """Each JSON record becomes one line, and the last line sums unlinks by cause."""
        code, out, err = cli_inproc("tail", "--no-follow", groom_log)
        assert code == 0, err
        lines = out.splitlines()
        assert len(lines) == len(_records(groom_log)) + 1
        n, b = _freed_by_cause(groom_log)
        assert set(n) == {"superseded", "budget", "orphan_temps", "stale_format"}
        summary = lines[-1]
        assert summary.startswith(f"summary: unlinked {sum(n.values())} files")
        for cause in n:
            assert f"{cause} {n[cause]} ({format_size(b[cause])})" in summary

    def test_event_columns_align_and_sizes_are_human(self, cli_inproc: Any,
                                                     groom_log: Path) -> None:  # fmt: skip
        """Events start in one column and sizes read like 18.1 KiB, not byte counts."""
        body = cli_inproc("tail", "--no-follow", groom_log)[1].splitlines()[:-1]
        starts = {line.index("snapshot.") for line in body if "snapshot." in line}
        assert len(starts) == 1
        unlinked = [line for line in body if "snapshot.unlinked" in line]
        assert all(" KiB" in line and "size=" in line for line in unlinked)
        assert not any('"size"' in line for line in body)

    def test_stdin_renders_like_a_file(self, run_cli: Any, groom_log: Path) -> None:
        """Input on stdin (as from journalctl -o cat) renders exactly like the file."""
        from_file = run_cli("tail", "--no-follow", groom_log).stdout
        from_stdin = run_cli("tail", input=groom_log.read_text()).stdout
        assert from_stdin == from_file

    def test_unlinks_are_coloured_by_cause(self, cli_inproc: Any, groom_log: Path) -> None:
        """With colour on, superseded lines are cyan and budget lines yellow; off, no escapes."""
        on = cli_inproc("tail", "--no-follow", "--color", "always", groom_log)[1]
        lines = {line for line in on.splitlines() if "snapshot.unlinked" in line}
        assert all(line.startswith("\x1b[36m") for line in lines if "superseded" in line)
        assert all(line.startswith("\x1b[33m") for line in lines if " budget " in line)
        off = cli_inproc("tail", "--no-follow", "--color", "never", groom_log)[1]
        assert "\x1b[" not in off


class TestFilters:
    def test_event_and_cause_filters_keep_only_matching_lines(self, cli_inproc: Any,
                                                              groom_log: Path) -> None:  # fmt: skip
        """`--event` and `--cause` together keep only those unlinks; the summary counts them."""
        _, out, _ = cli_inproc("tail", "--no-follow", "--event", "snapshot.unl*",
                               "--cause", "superseded", groom_log)  # fmt: skip
        body, summary = out.splitlines()[:-1], out.splitlines()[-1]
        assert len(body) == 2
        assert all("snapshot.unlinked      superseded sha=" in line for line in body)
        assert summary.startswith("summary: unlinked 2 files")
        assert "budget" not in summary

    def test_unknown_cause_is_a_usage_error(self, cli_inproc: Any, groom_log: Path) -> None:
        """A cause that does not exist is refused with status 2."""
        code, _, _ = cli_inproc("tail", "--no-follow", "--cause", "bogus", groom_log)
        assert code == 2


def _read_until(stream: IO[str], needle: str, deadline: float) -> str:
    seen = ""
    while time.monotonic() < deadline:
        line = stream.readline()
        seen += line
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not seen in {seen!r}")


class TestFollow:
    def test_follows_appends_and_rotation_then_summarises_on_sigterm(
        self, groom_log: Path, tmp_path: Path
    ) -> None:
        """A followed file's new lines appear, also after rotation; SIGTERM ends with a summary."""
        records = _records(groom_log)
        unlinked = [r for r in records if r["event"] == "snapshot.unlinked"]
        log = tmp_path / "live.log"
        log.write_text(json.dumps(records[0]) + "\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "kvgroomd", "tail", str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        deadline = time.monotonic() + 15
        try:
            _read_until(proc.stdout, records[0]["event"], deadline)
            with log.open("a") as f:
                f.write(json.dumps(unlinked[0]) + "\n")
            _read_until(proc.stdout, "snapshot.unlinked", deadline)
            log.rename(tmp_path / "live.log.1")  # logrotate: move away, start a new file
            log.write_text(json.dumps(unlinked[1]) + "\n")
            _read_until(proc.stdout, "snapshot.unlinked", deadline)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0
        assert out.splitlines()[-1].startswith("summary: unlinked 2 files")

    def test_missing_file_exits_1(self, cli_inproc: Any, tmp_path: Path) -> None:
        """A log file that does not exist is a runtime failure, status 1."""
        code, _, err = cli_inproc("tail", tmp_path / "nope.log")
        assert code == 1
        assert "cannot read" in err
