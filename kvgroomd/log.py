"""Logging: structlog, one JSON object per line on stdout.

Shell. Event names are a stable interface (README documents them), so they
are defined once here. Console rendering is for people at a terminal.
"""

from __future__ import annotations

import logging
import sys
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
# Passes
RECONCILE_DONE = "reconcile.done"
BUDGET_UNREACHABLE = "budget.unreachable"
GROOM_DONE = "groom.done"
# Metrics
METRICS_LISTENING = "metrics.listening"
METRICS_FAILED = "metrics.failed"

LEVELS = ("debug", "info", "warning", "error")


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog for JSON (or console, on a TTY or when asked) output."""
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
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
