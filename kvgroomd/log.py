"""Logging: structlog, one JSON object per line on stdout.

Shell. Event names are a stable interface (docs/logs.md documents them),
defined once in `events.py` (pure) and re-exported here.

Two renderings. JSON lines for machines; under systemd, when stdout is the
journal's stream (`JOURNAL_STREAM`), each line starts with its sd-daemon
priority (`<4>` for a warning), which journald strips and keeps as the
entry's priority: `journalctl -p warning` then finds warnings and errors,
and `journalctl -o cat` still prints pure JSON lines. For people (a terminal,
or `log.format: console`), the renderer of `kvgroomd tail` (ops/tail.py).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

from kvgroomd.events import *  # noqa: F403 - the event names, re-exported

LEVELS = ("debug", "info", "warning", "error")
# sd-daemon(3) priorities, as syslog's: what `journalctl -p` filters on.
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}

Renderer = Callable[[Any, str, MutableMapping[str, Any]], str | bytes]


def to_journal(out: TextIO) -> bool:
    """Whether `out` is the stream systemd connected to the journal: the
    `JOURNAL_STREAM` variable names its device and inode (`dev:ino`). A
    service whose output goes elsewhere (a file, a pipe) inherits the
    variable but must not get the prefixes, hence the comparison."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(out.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (AttributeError, OSError, ValueError):  # no fd (StringIO), unset or malformed
        return False


def _with_priority(render: Renderer) -> Renderer:
    def prefixed(logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        line = render(logger, name, event)
        text = line.decode() if isinstance(line, bytes) else line
        return f"<{PRIORITIES.get(str(event.get('level')), 6)}>{text}"

    return prefixed


def _human(out: TextIO) -> Renderer:
    from kvgroomd.ops.tail import colour_wanted, render, terminal_width  # noqa: PLC0415 - cycle

    colour = colour_wanted(out)

    def human(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
        return render(dict(event), colour=colour, width=terminal_width(out))

    return human


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog: JSON lines (priority-prefixed for journald), or the
    human rendering on a terminal or when asked (`fmt="console"`)."""
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Renderer
    if console:
        renderer = _human(out)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        if to_journal(out):
            renderer = _with_priority(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get() -> Any:
    """The kvgroomd logger."""
    return structlog.get_logger("kvgroomd")
