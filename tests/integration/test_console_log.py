"""The daemon on a terminal renders its log as `kvgroomd tail` does.

A real pseudo-terminal of a known width: the daemon's stdout is a tty, so
`log.format: auto` picks the human rendering.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b\[[0-9;]*m")
COLUMNS = 100
TIMEOUT = 20.0


def run_on_a_terminal(cache: Path, env: dict[str, str], columns: int = COLUMNS) -> list[str]:
    """`kvgroomd run --cache-dir CACHE` on a pty `columns` wide, until daemon.ready,
    then SIGTERM; the lines it printed (with their escape codes)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR")}
    proc = subprocess.Popen([sys.executable, "-m", "kvgroomd", "run", "--cache-dir", str(cache)],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env={**full, **env})  # fmt: skip
    os.close(slave)
    out = b""
    deadline = time.monotonic() + TIMEOUT
    stopped = False
    try:
        while True:
            if not stopped and b"daemon.ready" in out:
                proc.send_signal(signal.SIGTERM)
                stopped = True
            if time.monotonic() > deadline:
                pytest.fail(f"no daemon.ready/exit in {TIMEOUT}s: {out.decode(errors='replace')}")
            try:
                chunk = os.read(master, 65536)
            except OSError as e:  # EIO: every slave end closed, the daemon is gone
                if e.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        assert proc.wait(TIMEOUT) == 0
    return out.decode().replace("\r\n", "\n").splitlines()


def test_terminal_lines_are_human_fit_the_width_and_are_coloured(fixture_cache: Path) -> None:
    """On a terminal: no JSON, human sizes, 12-hex shas, every line within the terminal's
    width, and colour (escape codes) by default."""
    lines = run_on_a_terminal(fixture_cache, {})
    plain = [ANSI.sub("", line) for line in lines]
    assert plain, lines
    assert not [p for p in plain if p.lstrip().startswith("{")]
    assert max(len(p) for p in plain) <= COLUMNS, plain
    unlinked = [p for p in plain if " snapshot.unlinked " in p]
    assert len(unlinked) == 2, plain  # the fixture's superseded chain C
    for p in unlinked:
        assert re.search(r" superseded sha=[0-9a-f]{12} size=\d+\.\d KiB reason=continued", p), p
    ready = next(p for p in plain if " daemon.ready " in p)
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO  daemon\.ready +budget=null dir_bytes=\d+\.\d KiB "
                        r"invalid=\d+ snapshots=\d+", ready), ready  # fmt: skip
    assert any(ANSI.search(line) for line in lines)


def test_no_color_turns_colour_off(fixture_cache: Path) -> None:
    """NO_COLOR (any non-empty value, no-color.org) leaves no escape code."""
    lines = run_on_a_terminal(fixture_cache, {"NO_COLOR": "1"})
    assert any(" snapshot.unlinked " in line for line in lines)
    assert not [line for line in lines if "\x1b" in line]


def test_a_narrow_terminal_cuts_lines_not_events(fixture_cache: Path) -> None:
    """At 60 columns every line still fits, ends in an ellipsis where it was cut, and
    every event still has its line."""
    wide = run_on_a_terminal(fixture_cache, {"NO_COLOR": "1"})
    narrow = run_on_a_terminal(fixture_cache, {"NO_COLOR": "1"}, columns=60)
    assert max(len(line) for line in narrow) <= 60
    assert any(line.endswith("…") for line in narrow)

    def events(lines: list[str]) -> list[str]:
        return [line.split()[2] for line in lines if re.match(r"\d\d:\d\d:\d\d ", line)]

    assert events(narrow)[:3] == events(wide)[:3]
