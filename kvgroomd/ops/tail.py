"""`kvgroomd tail`: kvgroomd's JSON log, rendered for people.

The rendering (`render`, `Filter`, `Summary`) is pure: one JSON object in,
one aligned line out. It is the only human rendering of the log: the daemon
itself uses `render` on a terminal or with `log.format: console` (log.py), so
`kvgroomd run` on a terminal and `journalctl -o cat | kvgroomd tail` look the
same: human sizes, short shas, a fixed key order, lines cut to the terminal's
width (a multi-line value such as a traceback follows, indented), colour unless
`NO_COLOR` is set. The shell part follows a file (surviving truncation and
rotation) or reads stdin, e.g. `journalctl -u kvgroomd -o cat -f | kvgroomd tail`,
and prints a summary of unlinks and bytes freed by cause when it ends (end of
input, Ctrl-C or SIGTERM). The summary covers the lines shown (after filters).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from kvgroomd import log as events
from kvgroomd.config import format_size
from kvgroomd.core.decision import Cause

# ANSI SGR codes. Unlinks are coloured by cause so a glance tells a healthy
# stream (supersession) from budget pressure or leak cleanup.
CAUSE_COLOURS = {
    str(Cause.SUPERSEDED): "36",  # cyan
    str(Cause.BUDGET): "33",  # yellow
    str(Cause.ORPHAN_TEMP): "35",  # magenta
    str(Cause.STALE_FORMAT): "34",  # blue
}
LEVEL_NAMES = {"debug": "DEBUG", "info": "INFO", "warning": "WARN", "error": "ERROR",
               "critical": "CRIT"}  # fmt: skip
LEVEL_COLOURS = {"error": "1;31", "critical": "1;31", "warning": "33", "debug": "2"}
UNLINK_EVENTS = (events.UNLINKED, events.WOULD_UNLINK)
SIZE_KEYS = frozenset({"size", "bytes", "budget", "freed", "expected_size", "would_free",
                       "engine_budget"})  # fmt: skip
SHA_KEYS = frozenset({"sha", "superseded_by"})
# Then every other key by name: the same event always reads the same way. An
# unlink's cause comes first without its key (it is also the line's colour),
# so what was removed and how big it was fit in 80 columns.
FIRST_KEYS = ("cause", "sha", "size", "reason", "tokens", "hits")
HIDDEN_KEYS = frozenset({"event", "level", "timestamp", "logger"})
EVENT_WIDTH = 22
CAUSE_WIDTH = 10  # "superseded"
MIN_VALUE_WIDTH = 24  # a value is never cut shorter than this
ELLIPSIS = "…"
POLL_S = 0.2


def _paint(text: str, code: str | None, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


def _is_size(key: str) -> bool:
    return key in SIZE_KEYS or (key.endswith("_bytes") and key != "ctx_size")


def _value(key: str, v: Any) -> str:
    if _is_size(key) and isinstance(v, int) and not isinstance(v, bool):
        return format_size(v)
    if key in SHA_KEYS and isinstance(v, str) and len(v) == 40:
        return v[:12]
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str):
        return v if v and " " not in v and "=" not in v else json.dumps(v)
    if isinstance(v, dict):  # e.g. groom.done's by_cause: sizes inside are human too
        inner = ",".join(f"{k}:{_value(str(k), x)}" for k, x in v.items())
        return f"{{{inner}}}"
    return json.dumps(v, separators=(",", ":"))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + ELLIPSIS


def _time(stamp: Any) -> str:
    """HH:MM:SS from structlog's ISO timestamp (UTC)."""
    if isinstance(stamp, str) and "T" in stamp:
        return stamp.split("T", 1)[1][:8]
    return " " * 8


def render(rec: dict[str, Any], *, colour: bool = False, width: int | None = None) -> str:
    """One aligned line for one log record (plus, indented below it, any value
    that spans lines, such as a traceback). With `width`, the line is cut to
    it: long values first (to MIN_VALUE_WIDTH), then the line's end."""
    event = str(rec.get("event", "?"))
    level = str(rec.get("level", "")).lower()
    fields = {k: v for k, v in rec.items() if k not in HIDDEN_KEYS}
    if "sha" in fields or event in UNLINK_EVENTS:
        path = fields.pop("path", None)
        if "sha" not in fields and isinstance(path, str):
            fields["file"] = os.path.basename(path)
    blocks = {k: v for k, v in fields.items() if isinstance(v, str) and "\n" in v.strip()}
    ordered = [k for k in FIRST_KEYS if k in fields]
    ordered += sorted(k for k in fields if k not in FIRST_KEYS and k not in blocks)
    shown = LEVEL_NAMES.get(level, level[:5].upper())
    head = f"{_time(rec.get('timestamp'))} {shown:<5} {event:<{EVENT_WIDTH}}"
    values = {k: _value(k, fields[k]) for k in ordered}
    if width is not None:
        room = max(width // 3, MIN_VALUE_WIDTH)
        values = {k: _cut(v, room) for k, v in values.items()}
    parts = [
        f"{values[k]:<{CAUSE_WIDTH}}" if k == "cause" and event in UNLINK_EVENTS
        else f"{k}={values[k]}"
        for k in ordered
    ]  # fmt: skip
    body = " ".join(parts).rstrip()
    if width is not None:
        body = _cut(body, max(width - len(head) - 1, 0)) if body else ""
    if event in UNLINK_EVENTS:
        code = CAUSE_COLOURS.get(str(rec.get("cause")))
        if event == events.WOULD_UNLINK and code:
            code = f"2;{code}"  # dry run: dimmed
        line = _paint(f"{head} {body}".rstrip(), code, colour)
    else:
        line = _paint(head.rstrip() if not body else head, LEVEL_COLOURS.get(level), colour)
        line += f" {body}" if body else ""
    for k, v in blocks.items():  # a traceback: whole, below the line it belongs to
        text = "\n".join(f"    {x}" for x in v.strip("\n").splitlines())
        line += "\n" + _paint(f"  {k}:\n{text}", "2", colour)
    return line


def colour_wanted(out: Any) -> bool:
    """Colour by default: only on a terminal, and never when NO_COLOR is set
    (to anything but the empty string, as no-color.org says)."""
    return not os.environ.get("NO_COLOR") and bool(getattr(out, "isatty", lambda: False)())


def terminal_width(out: Any) -> int | None:
    """The width to cut lines to: the terminal's (COLUMNS first), or None when
    `out` is not a terminal (a pipe or file gets whole lines)."""
    try:
        if not out.isatty():
            return None
        columns = os.environ.get("COLUMNS", "")
        return int(columns) if columns.isdigit() else os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Filter:
    """Which records to show: event globs and unlink causes (empty: all)."""

    events: tuple[str, ...] = ()
    causes: tuple[str, ...] = ()

    def __call__(self, rec: dict[str, Any]) -> bool:
        event = str(rec.get("event", ""))
        if self.events and not any(fnmatch.fnmatchcase(event, g) for g in self.events):
            return False
        return not self.causes or rec.get("cause") in self.causes


@dataclass
class Summary:
    """Unlinks and bytes freed by cause (and dry-run would-unlinks)."""

    unlinked: Counter[str] = field(default_factory=Counter)
    freed: Counter[str] = field(default_factory=Counter)
    would: Counter[str] = field(default_factory=Counter)
    would_free: Counter[str] = field(default_factory=Counter)
    lines: int = 0

    def add(self, rec: dict[str, Any]) -> None:
        """Count one shown record."""
        self.lines += 1
        event, cause = rec.get("event"), str(rec.get("cause", "?"))
        size = rec.get("size")
        size = size if isinstance(size, int) else 0
        if event == events.UNLINKED:
            self.unlinked[cause] += 1
            self.freed[cause] += size
        elif event == events.WOULD_UNLINK:
            self.would[cause] += 1
            self.would_free[cause] += size

    @staticmethod
    def _part(verb: str, n: Counter[str], b: Counter[str]) -> str:
        by = ", ".join(f"{c} {n[c]} ({format_size(b[c])})" for c in sorted(n))
        total = sum(n.values())
        return f"{verb} {total} file{'' if total == 1 else 's'}, {format_size(sum(b.values()))}" + (
            f": {by}" if by else ""
        )

    def line(self) -> str:
        """The closing line."""
        text = "summary: " + self._part("unlinked", self.unlinked, self.freed)
        if self.would:
            text += "; dry run: " + self._part("would unlink", self.would, self.would_free)
        return text


def parse(line: str) -> dict[str, Any] | None:
    """A JSON object from a log line, or None (not JSON, or not an object)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


# -- shell ---------------------------------------------------------------------


class _Stop(Exception):  # noqa: N818 - a signal, not an error
    pass


def _lines_of(stream: BinaryIO) -> Iterator[str]:
    for raw in iter(stream.readline, b""):
        yield raw.decode("utf-8", "replace")


def follow(
    f: BinaryIO,
    path: Path,
    *,
    keep_going: bool,
    sleep: Callable[[float], None] = time.sleep,
    poll: float = POLL_S,
) -> Iterator[str]:
    """Lines of the open log `f` (named `path`); with `keep_going`, then wait
    for more, reopening `path` when it is rotated (new inode) or truncated."""
    try:
        ino = os.fstat(f.fileno()).st_ino
        partial = b""
        while True:
            raw = f.readline()
            if raw.endswith(b"\n"):
                yield (partial + raw).decode("utf-8", "replace")
                partial = b""
                continue
            partial += raw
            if not keep_going:
                if partial:
                    yield partial.decode("utf-8", "replace")
                return
            try:
                st = path.stat()
            except FileNotFoundError:  # rotated away, new file not there yet
                sleep(poll)
                continue
            if st.st_ino != ino:
                f.close()
                f = path.open("rb")
                ino = os.fstat(f.fileno()).st_ino
                partial = b""
            elif st.st_size < f.tell():  # truncated in place (copytruncate)
                f.seek(0)
                partial = b""
            else:
                sleep(poll)
    finally:
        f.close()


def run(lines: Iterator[str], out: Any, *, keep: Filter, colour: bool,
        summary: Summary | None = None, width: int | None = None) -> Summary:  # fmt: skip
    """Render every line; count what was shown into `summary` as it goes (so an
    interrupt keeps the counts) and return it."""
    summary = summary if summary is not None else Summary()
    for line in lines:
        rec = parse(line)
        if rec is None:  # not kvgroomd JSON: pass through, dimmed, unless filtering
            if not keep.events and not keep.causes and line.strip():
                out.write(_paint(line.rstrip("\n"), "2", colour) + "\n")
                out.flush()
            continue
        if not keep(rec):
            continue
        summary.add(rec)
        out.write(render(rec, colour=colour, width=width) + "\n")
        out.flush()
    return summary


def _colour(choice: str, out: Any) -> bool:
    if choice != "auto":
        return choice == "always"
    return colour_wanted(out)


def main(args: argparse.Namespace, stdin: BinaryIO | None = None, out: Any = None) -> int:
    """`kvgroomd tail [FILE]`. 0 at end of input or on Ctrl-C/SIGTERM; 1 when
    FILE cannot be read."""
    out = out or sys.stdout
    keep = Filter(tuple(args.event or ()), tuple(args.cause or ()))
    colour = _colour(args.color, out)
    if args.file is None:
        lines = _lines_of(stdin or sys.stdin.buffer)
    else:
        try:
            lines = follow(args.file.open("rb"), args.file, keep_going=args.follow)
        except OSError as e:
            print(f"kvgroomd: cannot read {args.file}: {e.strerror}", file=sys.stderr)
            return 1

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise _Stop

    old = signal.signal(signal.SIGTERM, stop)
    summary = Summary()
    try:
        run(lines, out, keep=keep, colour=colour, summary=summary, width=terminal_width(out))
    except (_Stop, KeyboardInterrupt):
        pass
    except BrokenPipeError:  # e.g. `| head`: the reader left, nobody wants a summary
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)
    out.write(summary.line() + "\n")
    out.flush()
    return 0
