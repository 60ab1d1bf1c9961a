"""journald: sd-daemon priority prefixes when stdout is the journal's stream.

systemd connects a service's stdout and stderr to one journal stream socket
and names it in JOURNAL_STREAM (`dev:ino`). Here a pipe plays that socket:
the daemon's stdout and stderr are its write end, and JOURNAL_STREAM names it,
as under `StandardOutput=journal`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
LINE = re.compile(r"<(\d)>(\{.*\})")
TIMEOUT = 20.0


class Run:
    """`kvgroomd run` writing to a pipe (stdout and stderr both), lines collected."""

    def __init__(self, args: list[str], env: dict[str, str] | None, *,
                 journal: str | None) -> None:  # fmt: skip
        """`journal`: what JOURNAL_STREAM says: "pipe" (the output pipe's dev:ino),
        a literal value, or None (unset)."""
        read, write = os.pipe()
        st = os.fstat(write)
        full = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        full.update(env or {})
        if journal == "pipe":
            full["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal is not None:
            full["JOURNAL_STREAM"] = journal
        self.proc = subprocess.Popen([sys.executable, "-m", "kvgroomd", "run", *args],
                                     stdin=subprocess.DEVNULL, stdout=write, stderr=write,
                                     env=full)  # fmt: skip
        os.close(write)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(read,), daemon=True)
        self._reader.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "r", encoding="utf-8") as f:
            for line in f:
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        with self._cond:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no line with {text!r} in {TIMEOUT}s: {self.lines}")
                self._cond.wait(left)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        return code


def _warning_and_error(tmp_path: Path, journal: str | None) -> Run:
    """A daemon that logs info, a warning (its cache dir is missing) and an
    error (SIGHUP without a config file to reload), then stops."""
    run = Run(["--cache-dir", str(tmp_path / "not-yet")], None, journal=journal)
    run.wait_for("daemon.cache_dir_missing")
    run.proc.send_signal(signal.SIGHUP)
    run.wait_for("daemon.reload_failed")
    assert run.stop() == 0
    return run


def test_journal_stream_lines_carry_their_priority_and_stay_json(tmp_path: Path) -> None:
    """Under JOURNAL_STREAM every line is `<N>` + one JSON object, N the sd-daemon priority
    of its level: journald strips the prefix into PRIORITY= (so `journalctl -p warning`
    finds warnings and errors) and `journalctl -o cat` prints the JSON alone."""
    run = _warning_and_error(tmp_path, "pipe")
    seen = {}
    for line in run.lines:
        m = LINE.fullmatch(line)
        assert m, f"not <N>{{json}}: {line!r}"
        record = json.loads(m.group(2))  # what -o cat prints: pure JSON
        assert int(m.group(1)) == PRIORITY[record["level"]], line
        seen[record["event"]] = int(m.group(1))
    assert seen["daemon.started"] == 6
    assert seen["daemon.cache_dir_missing"] == 4
    assert seen["daemon.reload_failed"] == 3
    assert seen["daemon.stopped"] == 6


@pytest.mark.parametrize("journal", [None, "another", "0:0", "garbage"])
def test_no_prefix_unless_stdout_is_the_journal_stream(tmp_path: Path,
                                                       journal: str | None) -> None:  # fmt: skip
    """Unset, naming another stream (a service whose stdout was redirected to a file
    inherits the variable), or malformed: plain JSON lines, no prefix."""
    if journal == "another":
        st = os.stat(tmp_path)
        journal = f"{st.st_dev}:{st.st_ino}"
    run = _warning_and_error(tmp_path, journal)
    assert run.lines
    for line in run.lines:
        assert line.startswith("{"), line
        json.loads(line)
