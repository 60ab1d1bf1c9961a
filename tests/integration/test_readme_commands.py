"""The README's commands, run as written, on a copy of the fixture cache.

Each command is taken from README.md itself (so a README that drifts from
the code fails here): the cache directory it names is replaced by a test
directory and `.venv/bin/kvgroomd` by this interpreter's `-m kvgroomd`.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
README_DIR = "/var/cache/ds4-kv"
SUPERSEDED = {"f0922bcf3e95efae8b6fe801839d6c6b12b7179d.kv",
              "c452d78715c5543a16af56e2eac8aa4eaf0579f7.kv"}  # fmt: skip
TIMEOUT = 30.0


def _section(title: str) -> str:
    md = (ROOT / "README.md").read_text(encoding="utf-8")
    start = md.index(f"\n## {title}\n")
    end = md.find("\n## ", start + 1)
    return md[start:end]


def _commands(title: str) -> list[str]:
    """The kvgroomd invocations of a README section's shell blocks, one per line."""
    blocks = re.findall(r"```sh\n(.*?)```", _section(title), flags=re.S)
    lines = [line.strip() for b in blocks for line in b.splitlines()]
    return [line.split("&& ")[-1] for line in lines if "bin/kvgroomd " in line]


def _argv(command: str, cache: Path) -> list[str]:
    words = shlex.split(command.replace(README_DIR, str(cache)))
    assert words[0] == ".venv/bin/kvgroomd", command
    return [sys.executable, "-m", "kvgroomd", *words[1:]]


def _run_until_ready(argv: list[str]) -> list[dict[str, Any]]:
    """Start the daemon as the README says, wait for daemon.ready, stop it (Ctrl-C's
    SIGINT, as the quickstart says), and return its log."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    records: list[dict[str, Any]] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            records.append(json.loads(line))
            if records[-1]["event"] == "daemon.ready":
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(TIMEOUT), (records, proc.poll())
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(TIMEOUT)
        reader.join(TIMEOUT)
        err = proc.stderr.read() if proc.stderr else ""
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert code == 0, err
    return records


def test_set_up_runs_the_daemon_on_the_directory(fixture_cache: Path) -> None:
    """The README's install-and-run command, as written: the daemon starts on the
    directory with the engine's budget, grooms it (the superseded chain goes) and stops
    cleanly."""
    (command,) = _commands("Set up")
    assert "--engine-budget" in command
    records = _run_until_ready(_argv(command, fixture_cache))
    unlinked = {Path(r["path"]).name for r in records if r["event"] == "snapshot.unlinked"}
    assert unlinked == SUPERSEDED
    assert not SUPERSEDED & {p.name for p in fixture_cache.iterdir()}


def test_the_quickstart_looks_then_rehearses_without_deleting(fixture_cache: Path,
                                                              kit: Any) -> None:  # fmt: skip
    """Quickstart steps 1 and 2 as written: stats and ls only read; the dry run says what
    it would delete, and deletes nothing."""
    commands = _commands("Quickstart, safely, on a real cache")
    assert [c.split()[1] for c in commands] == ["stats", "ls", "run"]
    before = kit.listing(fixture_cache)
    for command in commands[:2]:
        p = subprocess.run(_argv(command, fixture_cache), capture_output=True, text=True,
                           timeout=TIMEOUT, check=False)  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip()
    assert "--dry-run" in commands[2]
    records = _run_until_ready(_argv(commands[2], fixture_cache))
    would = {Path(r["path"]).name for r in records if r["event"] == "snapshot.would_unlink"}
    assert would == SUPERSEDED
    assert not [r for r in records if r["event"] == "snapshot.unlinked"]
    time.sleep(0.1)
    assert kit.listing(fixture_cache) == before
