"""Logging: structlog, one JSON object per line on stdout.

Shell. Event names are a stable interface (docs/logs.md documents them), so
they are defined once here.

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

# Daemon life cycle
STARTED = "daemon.started"
READY = "daemon.ready"
RELOADED = "daemon.reloaded"
RELOAD_FAILED = "daemon.reload_failed"
STOPPING = "daemon.stopping"
STOPPED = "daemon.stopped"
FAILED = "daemon.failed"  # an unexpected error: exits 1
DIR_MISSING = "daemon.cache_dir_missing"
DIR_ERROR = "daemon.cache_dir_error"
CONFIG_WARNING = "config.warning"  # a config key that still works but should change
DIR_PINNED = "daemon.cache_dir_pinned"  # opened once; every operation goes through it
DIR_CHANGED = "daemon.cache_dir_changed"  # the path no longer names it: nothing is acted on
DIR_UNUSUAL = "daemon.cache_dir_unusual"  # mostly not snapshots: the wrong directory?
DIR_LOCKED = "daemon.cache_dir_locked"  # another kvgroomd grooms it: exit 6
OBSERVER_DIED = "observer.died"
OBSERVER_RESTARTED = "observer.restarted"
OBSERVER_START_FAILED = "observer.start_failed"
EVENTS_LOST = "observer.events_lost"
# Snapshots
ADDED = "snapshot.added"
UPDATED = "snapshot.updated"
REPLACED = "snapshot.replaced"
REMOVED = "snapshot.removed"  # gone from disk, not by us (engine evict/consume)
INVALID = "snapshot.invalid"
UNLINKED = "snapshot.unlinked"
WOULD_UNLINK = "snapshot.would_unlink"
UNLINK_SKIPPED = "snapshot.unlink_skipped"
UNLINK_REFUSED = "snapshot.unlink_refused"
UNLINK_FAILED = "snapshot.unlink_failed"
UNLINK_RECOVERED = "snapshot.unlink_recovered"
RECOVER_REFUSED = "snapshot.recover_refused"  # held-looking, but not recorded as ours
JOURNAL_UNAVAILABLE = "daemon.journal_unavailable"  # no state directory for the held journal
# Passes
RECONCILE_DONE = "reconcile.done"
BUDGET_UNREACHABLE = "budget.unreachable"
GROOM_DONE = "groom.done"
# Metrics
METRICS_LISTENING = "metrics.listening"
METRICS_FAILED = "metrics.failed"

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
