"""Log event names: a stable interface (docs/logs.md documents each one).

Pure constants, defined once: the core's notes (core/groomer.py), the shell's
log lines and `kvgroomd tail` all use these names.
"""

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
OBSERVER_DIED = "observer.died"
OBSERVER_RESTARTED = "observer.restarted"
OBSERVER_START_FAILED = "observer.start_failed"
EVENTS_LOST = "observer.events_lost"
# Snapshots
ADDED = "snapshot.added"
UPDATED = "snapshot.updated"
REPLACED = "snapshot.replaced"
REMOVED = "snapshot.removed"  # gone from disk, not by us (engine evict/consume)
EXTENDS = "snapshot.extends"  # its text strictly extends these (proven by SHA-1; debug)
INVALID = "snapshot.invalid"
OTHER_LAYOUT = "snapshot.other_layout"  # another engine's layout: counted apart, left alone
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
CLOCK_SKEW = "snapshot.clock_skew"  # a header time ahead of ours: ages count from when we saw it
DIR_PINNED = "daemon.cache_dir_pinned"  # opened once; every operation goes through it
DIR_CHANGED = "daemon.cache_dir_changed"  # the path no longer names it: nothing is acted on
DIR_UNUSUAL = "daemon.cache_dir_unusual"  # mostly not snapshots: the wrong directory?
DIR_LOCKED = "daemon.cache_dir_locked"  # another kvgroomd grooms it: exit 6
RECOVER_REFUSED = "snapshot.recover_refused"  # held-looking, but not recorded as ours
TRACE_STARTED = "trace.started"  # the activity trace is recorded (path, ids key id)
TRACE_FAILED = "trace.failed"  # it cannot be opened or written: running on without it
TRACE_KEY_EPHEMERAL = "trace.key_ephemeral"  # no state directory for its key: ids per run
JOURNAL_UNAVAILABLE = "daemon.journal_unavailable"  # no state directory for the held journal
