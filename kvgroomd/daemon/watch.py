"""The watcher: turns inotify events into domain events on a queue.

Shell; the only module that imports watchdog. It decides nothing: it says
that a snapshot-named file *landed* (renamed into place, or closed after a
direct write or an in-place header rewrite), is *gone*, or that events were
*lost* (kernel queue overflow) or the directory itself vanished. The daemon
thread does all the work, so the observer thread only enqueues.

Why these signals: the engine writes `<sha>.kv.tmp.<pid>` and renames it, and
inotify reports no close on the final name, so the rename destination is the
landing. A direct create is only complete once closed (IN_CLOSE_WRITE), but
a hard link is complete at IN_CREATE, so both are read; the engine's in-place
touch also ends with a close. IN_MODIFY fires mid-write and is ignored (an
in-place write that is never closed is caught by the periodic reconcile).

watchdog limits (7.x): on IN_Q_OVERFLOW it only logs a warning and drops its
pending move pairs, so we listen for that log record and ask for a rescan.
An exception inside a handler ends the observer thread for good: our observer
catches it on the way out and enqueues `ObserverDied`, so the daemon learns at
once (and logs why); it also polls `alive()`, which catches the emitter or the
inotify reader thread dying, where no such hook exists.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    DirDeletedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from kvgroomd.format.names import SnapshotName, classify


@dataclass(frozen=True, slots=True)
class Landed:
    """A snapshot-named file is (newly) complete on disk: read it.

    `created`: only its creation was seen. A hard link arrives complete, but a
    direct write is still empty then; its close follows, so a short read of a
    created file is not yet worth reporting.
    """

    name: str
    created: bool = False
    # When the event was queued (time.monotonic()), for the latency metric.
    at: float = field(default_factory=time.monotonic, compare=False)


@dataclass(frozen=True, slots=True)
class Gone:
    """A snapshot-named file left the directory."""

    name: str


@dataclass(frozen=True, slots=True)
class Lost:
    """Events were lost (queue overflow): only a rescan can tell what changed."""

    why: str


@dataclass(frozen=True, slots=True)
class DirGone:
    """The watched directory itself was deleted or moved away."""


@dataclass(frozen=True, slots=True)
class ObserverDied:
    """The observer thread ended on an exception: events are no longer seen."""

    error: str  # "RuntimeError: ..."
    trace: str  # the formatted traceback, for the log


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing happened on disk; the daemon should look at its flags."""


Event = Landed | Gone | Lost | DirGone | ObserverDied | Wake
EventQueue = queue.SimpleQueue[Event]  # put() is reentrant: safe from signal handlers

_OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
# The only events the handler acts on. Passing them to schedule() narrows the
# inotify mask: without it watchdog also asks for IN_OPEN, IN_CLOSE_NOWRITE,
# IN_MODIFY and IN_ATTRIB, so every file the daemon itself reads (100,000 at
# start-up, several per landing) came back as two events through three
# threads, competing for the GIL and overflowing the kernel queue (16,384).
# DirModifiedEvent is left out too: watchdog queues one after every move,
# create and delete, and the handler never needs it.
_EVENTS = [FileMovedEvent, FileCreatedEvent, FileClosedEvent, FileDeletedEvent, DirDeletedEvent]
# watchdog holds every IN_MOVED_FROM for up to 0.5 s to pair it with its
# IN_MOVED_TO, and its emitter thread sleeps out that delay whenever it sees
# the FROM before the TO arrives (the two can come in separate reads): the
# engine's rename of a new snapshot then reaches us 500 ms late (seen in the
# latency benchmark: p99 2.5 ms, max 534 ms). The handler needs no pairing:
# a move is a Gone of its source and a Landed of its destination either way,
# and an unpaired destination arrives as a creation (also a Landed). Without
# the delay nothing waits. (A class attribute, read when a watch is set up.)
InotifyMoveEventGrouper.delay = 0.0
_FAULT_ENV = "KVGROOMD_FAULT_OBSERVER"  # tests: a handler exception on this name


class _Handler(FileSystemEventHandler):
    def __init__(self, directory: Path, out: EventQueue) -> None:
        self.directory = str(directory)
        self.out = out
        self.fault = os.environ.get(_FAULT_ENV)

    def _snapshot(self, path: str | bytes) -> str | None:
        p = os.fsdecode(path)
        head, name = os.path.split(p)
        if self.fault and name == self.fault:
            msg = f"injected observer fault on {name}"
            raise RuntimeError(msg)
        if head != self.directory:  # sub-directories are not used by ds4
            return None
        return name if isinstance(classify(name), SnapshotName) else None

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent):
            if src := self._snapshot(event.src_path):
                self.out.put(Gone(src))
            if dest := self._snapshot(event.dest_path):
                self.out.put(Landed(dest))
        elif isinstance(event, FileClosedEvent):
            if name := self._snapshot(event.src_path):
                self.out.put(Landed(name))
        elif isinstance(event, FileCreatedEvent):
            if name := self._snapshot(event.src_path):
                self.out.put(Landed(name, created=True))
        elif isinstance(event, FileDeletedEvent):
            if name := self._snapshot(event.src_path):
                self.out.put(Gone(name))
        elif isinstance(event, DirDeletedEvent) and os.fsdecode(event.src_path) == self.directory:
            self.out.put(DirGone())
        elif isinstance(event, DirDeletedEvent):
            self._snapshot(event.src_path)  # a directory named like a snapshot: nothing


class _OverflowListener(logging.Handler):
    """Turns watchdog's overflow warning into a Lost event."""

    def __init__(self, out: EventQueue) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.out.put(Lost("inotify queue overflow"))


class _Observer(InotifyObserver):
    """An InotifyObserver that reports its own death on the daemon's queue.

    watchdog lets a handler's exception end the thread (threading.excepthook
    prints it to stderr, outside the JSON log); we turn it into an event.
    """

    def __init__(self, out: EventQueue) -> None:
        super().__init__()
        self.out = out
        # Set before the event is queued, so whoever reads the event also sees
        # this observer as dead, and a late event from an old observer cannot
        # make a healthy successor look dead.
        self.failure: ObserverDied | None = None

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # any handler error would end the thread anyway
            self.failure = ObserverDied(f"{type(e).__name__}: {e}", traceback.format_exc())
            self.out.put(self.failure)


class Watcher:
    """One inotify observer on the cache directory, restartable."""

    def __init__(self, directory: Path, out: EventQueue) -> None:
        self.directory = directory
        self.out = out
        self._observer: _Observer | None = None
        self._listener = _OverflowListener(out)
        logging.getLogger(_OVERFLOW_LOGGER).addHandler(self._listener)

    def start(self) -> None:
        """Start watching (raises OSError when the directory is not there)."""
        observer = _Observer(self.out)  # starts its inotify reader thread already
        try:
            observer.schedule(_Handler(self.directory, self.out), str(self.directory),
                              recursive=False, event_filter=_EVENTS)  # fmt: skip
            observer.daemon = True
            observer.start()
        except BaseException:
            # Without this, every failed attempt (a missing directory is retried
            # each second) leaked the reader thread, an inotify fd and a pipe.
            _halt(observer)
            raise
        self._observer = observer

    def alive(self) -> bool:
        """False once the observer thread, its emitter or its inotify reader died."""
        o = self._observer
        if o is None or o.failure is not None or not o.is_alive():
            return False
        if not all(e.is_alive() for e in o.emitters):
            return False
        reader = getattr(o, "_inotify_fd", None)  # watchdog 7.1+: a thread of its own
        return not (reader is not None and hasattr(reader, "is_alive") and not reader.is_alive())

    @property
    def failure(self) -> ObserverDied | None:
        """Why the current observer died, when a handler raised."""
        return self._observer.failure if self._observer is not None else None

    def stop(self) -> None:
        """Stop and join the observer thread (idempotent)."""
        o, self._observer = self._observer, None
        if o is not None:
            _halt(o)

    def close(self) -> None:
        """Stop and detach from watchdog's logger."""
        self.stop()
        logging.getLogger(_OVERFLOW_LOGGER).removeHandler(self._listener)


def _halt(o: InotifyObserver) -> None:
    """Stop an observer whether it ran, died or never started; join briefly."""
    with contextlib.suppress(Exception):  # a half-dead observer may trip here; it is gone anyway
        o.stop()  # also stops its emitters and the inotify reader
    if o.ident is not None:
        o.join(timeout=1)
