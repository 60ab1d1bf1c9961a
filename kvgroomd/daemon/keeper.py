"""The cache directory's life in the daemon: pinned and watched, missing, or down.

Shell, driven by the work loop (loop.py). Pins the configured directory and
takes its lock, starts the watcher, and when either fails decides what it
means: a missing directory (or a symlink, never followed) is waited for,
each second, as a healthy idle state; another kvgroomd holding the lock is
fatal (exit 6); any other failure, or an observer that died, is retried and
counted, and too many within a window end the daemon (exit 1) so systemd
can act. When the path stops naming the pinned directory (moved, swapped,
unmounted) nothing more is acted on until it is pinned again.
"""

from __future__ import annotations

import collections
import errno
from collections.abc import Callable
from enum import Enum
from typing import Any

from kvgroomd import log as events
from kvgroomd.daemon._timers import Timers
from kvgroomd.daemon.pinned import (
    EXIT_LOCKED,
    Locked,
    PinnedDir,
    is_missing,
    warn_if_unusual,
)
from kvgroomd.daemon.watch import EventQueue, Watcher

DIR_RETRY_S = 1.0  # how often to look for a missing cache dir
OBSERVER_FAILURES = 5  # this many observer deaths or failed starts ...
OBSERVER_WINDOW_S = 300.0  # ... within this window: give up, exit 1


class DirState(Enum):
    """Where the daemon stands with its cache directory."""

    WATCHING = "watching"
    MISSING = "missing"  # waited for: a healthy, idle state
    DOWN = "down"  # the observer failed: retried, and counted against giving up


class Check(Enum):
    """What `Keeper.check` found."""

    FINE = "fine"  # watching, or waiting (the "watch" timer retries)
    RESTARTED = "restarted"  # watching again: rescan what happened meanwhile
    FATAL = "fatal"  # too many failures, or another kvgroomd: exit with `status`


class Keeper:
    """The pinned directory, its watcher, and the state between them.
    Uses the "watch" timer of the loop's `timers` for its retries."""

    def __init__(self, directory: PinnedDir, queue: EventQueue, log: Any, timers: Timers,
                 mono: Callable[[], float]) -> None:  # fmt: skip
        self.directory = directory
        self.watcher = Watcher(directory, queue)
        self.log = log
        self.timers = timers
        self.mono = mono
        # WATCHING, MISSING (waiting for the directory: healthy and idle) or
        # DOWN (the observer failed to start or died: retried, counted).
        self.state = DirState.DOWN
        self.status = 1  # exit status when a start or re-pin fails for good
        self._failures: collections.deque[float] = collections.deque()

    @property
    def watching(self) -> bool:
        """Pinned and watched: events and rescans may be acted on."""
        return self.state is DirState.WATCHING

    @property
    def missing(self) -> bool:
        """Waiting for the directory to appear (or to be named again)."""
        return self.state is DirState.MISSING

    def healthy(self) -> bool:
        """What a WATCHDOG=1 vouches for: the observer runs, or there is
        legitimately nothing to watch yet."""
        if self.state is DirState.WATCHING:
            return self.watcher.alive()
        return self.state is DirState.MISSING

    def begin(self) -> bool:
        """Try to pin the directory and start the observer. A missing directory
        means waiting; another kvgroomd holding it is fatal (exit 6); any other
        error counts as a failure. False once failures exhaust the budget."""
        path = str(self.directory.path)
        try:
            self._pin()
            self.watcher.start()
        except Locked as e:
            self.log.error(events.DIR_LOCKED, cache_dir=path, error=str(e), pid=e.pid)
            self.status = EXIT_LOCKED
            return False
        except OSError as e:
            self.directory.unpin()
            self.timers.start("watch", DIR_RETRY_S)
            if is_missing(e) or e.errno == errno.ELOOP:
                if self.state is not DirState.MISSING:
                    why = "a symlink (not followed)" if e.errno == errno.ELOOP else None
                    self.log.warning(events.DIR_MISSING, cache_dir=path, retry_s=DIR_RETRY_S,
                                     why=why)  # fmt: skip
                self.state = DirState.MISSING
                return True
            self.state = DirState.DOWN
            self.log.error(events.OBSERVER_START_FAILED, cache_dir=path, error=e.strerror,
                           errno=e.errno)  # fmt: skip
            return self._count_failure()
        self.state = DirState.WATCHING
        self.timers.cancel("watch")
        return True

    def check(self) -> Check:
        """Restart a dead observer, or pin and watch a directory waited for,
        when the "watch" timer says so."""
        if self.state is DirState.WATCHING and self.watcher.alive():
            return Check.FINE
        if self.state is DirState.WATCHING:  # it was running and died: say why, count it
            self.state = DirState.DOWN
            died = self.watcher.failure
            self.watcher.stop()
            ok = self._count_failure()
            self.log.error(events.OBSERVER_DIED, deaths=len(self._failures),
                           window_s=OBSERVER_WINDOW_S, giving_up=not ok,
                           error=died.error if died else "observer thread ended",
                           traceback=died.trace if died else None)  # fmt: skip
            if not ok:
                return Check.FATAL
            self.timers.start("watch")
        if self.timers.pending("watch"):
            return Check.FINE
        was_missing = self.state is DirState.MISSING
        if not self.begin():
            return Check.FATAL
        if self.state is not DirState.WATCHING:
            return Check.FINE  # still missing (or failing): the "watch" timer retries
        after = "cache dir appeared" if was_missing else "observer died"
        self.log.info(events.OBSERVER_RESTARTED, cache_dir=str(self.directory.path), after=after)
        return Check.RESTARTED

    def unpinned(self, why: str) -> None:
        """The configured path no longer names the pinned directory: stop
        acting on it (nothing more is unlinked), and look each second for a
        directory to pin again (which a rescan then grooms)."""
        self.log.warning(events.DIR_CHANGED, cache_dir=str(self.directory.path), why=why,
                         action="stopped acting; pinning again once the path names a "
                         "directory", retry_s=DIR_RETRY_S)  # fmt: skip
        self.watcher.stop()
        self.directory.unpin()
        self.state = DirState.MISSING
        self.timers.start("watch", DIR_RETRY_S)

    def dir_event(self, event: str) -> None:
        """The watcher saw the directory (or an enclosing one, or the mount
        table) change: stop acting on it unless the path still names it."""
        if self.state is not DirState.WATCHING:
            return  # already unpinned: a late event of the stopped watcher
        if event == "deleted":
            self.log.warning(events.DIR_MISSING, cache_dir=str(self.directory.path),
                             why="deleted while watched")  # fmt: skip
            self.watcher.stop()
            self.directory.unpin()
            self.state = DirState.MISSING  # logged just now; check() retries each second
            self.timers.start("watch")
            return
        why = self.directory.why_not_named()
        if why is not None:
            self.unpinned(f"{why} ({event})")
        elif event in ("unmounted", "watch removed"):
            self.unpinned(event)  # its watch is gone: pin and watch it again

    def close(self) -> None:
        """Stop watching and let the directory go (the daemon ends)."""
        self.watcher.close()
        self.directory.unpin()

    def _pin(self) -> None:
        """Pin the configured directory (again) and take its lock; raises
        OSError (missing, a symlink, unreadable) or Locked."""
        d = self.directory
        if d.pinned:
            return
        try:
            d.pin()
            d.lock()
        except BaseException:
            d.unpin()
            raise
        self.log.info(events.DIR_PINNED, cache_dir=str(d.path), dev=d.dev, inode=d.ino)
        warn_if_unusual(d, self.log)

    def _count_failure(self) -> bool:
        """Remember one observer failure; False when there were too many lately."""
        now = self.mono()
        self._failures.append(now)
        while self._failures and now - self._failures[0] > OBSERVER_WINDOW_S:
            self._failures.popleft()
        return len(self._failures) < OBSERVER_FAILURES
