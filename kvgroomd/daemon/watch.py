"""The watcher: turns the cache directory's inotify events into domain events.

Shell; the only module that talks to inotify. It decides nothing: it says
that a snapshot-named file *landed* (renamed into place, or closed after a
direct write or an in-place header rewrite), is *gone*, that events were
*lost* (kernel queue overflow), or that the directory itself may no longer
be the one the configured path names (`DirGone`: deleted, moved, unmounted,
an enclosing directory moved, or the mount table changed). The daemon thread
does all the work; the reader thread only enqueues.

Why these signals: the engine writes `<sha>.kv.tmp.<pid>` and renames it, and
inotify reports no close on the final name, so the rename destination is the
landing. A direct create is only complete once closed (IN_CLOSE_WRITE), but
a hard link is complete at IN_CREATE, so both are read; the engine's in-place
touch also ends with a close. IN_MODIFY fires mid-write and is not asked for
(an in-place write that is never closed is caught by the periodic reconcile).

inotify(7) directly, through libc (inotify_init1, inotify_add_watch), not
watchdog: watchdog's public API cannot express what the daemon needs.
Measured on watchdog 6.0, 7.0 and 7.1 (observers/inotify.py,
inotify_c.py): its emitter never asks for IN_MOVE_SELF, so a directory
renamed away goes unnoticed (its events keep arriving under the old path);
IN_UNMOUNT reaches no handler; IN_Q_OVERFLOW is dropped (6.0, 7.0) or only
logged as a warning (7.1); and it holds each IN_MOVED_FROM for 0.5 s to pair
it (a class attribute, `delay`), which delayed a landing by up to 534 ms.
Changing any of that meant patching a class attribute, matching log text and
reading private attributes. Here there is one reader thread that blocks in
poll(2) on the inotify fd, /proc/self/mountinfo (POLLPRI on any mount or
unmount) and a wake-up pipe: no pairing, no delay, no timer.

Watches: the pinned directory itself, through /proc/self/fd/N (the very
inode pinned, whatever the path names by now), for the file events and
IN_MOVE_SELF (IN_UNMOUNT, IN_Q_OVERFLOW and IN_IGNORED come unasked); its
parent for entries of its name deleted, renamed or created (IN_DELETE_SELF
of a directory only comes once its last descriptor is closed, and the
daemon holds one); each further enclosing directory for IN_DELETE_SELF /
IN_MOVE_SELF only (no events about their other entries). A lazy unmount
(`umount -l`; a plain one fails with EBUSY while the directory is open) or a
mount over the directory shows as a mount table change.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import select
import struct
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from kvgroomd.daemon._threads import worker
from kvgroomd.daemon.pinned import PinnedDir
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
    """The watched directory may no longer be the one the configured path
    names: `why` is "deleted", "moved", "unmounted", "watch removed", "an
    enclosing directory moved or was deleted" or "mount table changed". The
    daemon checks (PinnedDir.why_not_named) and stops acting if so."""

    why: str = "deleted"


@dataclass(frozen=True, slots=True)
class ObserverDied:
    """The reader thread ended on an exception: events are no longer seen."""

    error: str  # "RuntimeError: ..."
    trace: str  # the formatted traceback, for the log


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing happened on disk; the daemon should look at its flags."""


Event = Landed | Gone | Lost | DirGone | ObserverDied | Wake
EventQueue = queue.SimpleQueue[Event]  # put() is reentrant: safe from signal handlers

# inotify(7) constants (linux/inotify.h; the same on every architecture).
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
# Only what the handler acts on: the daemon reads ~100,000 files at start-up,
# and IN_OPEN / IN_CLOSE_NOWRITE / IN_MODIFY / IN_ATTRIB on each of them would
# come back as events competing for the GIL and overflowing the kernel queue.
DIR_MASK = (IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
            | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)  # fmt: skip
ANCESTOR_MASK = IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW
# The parent also reports its entries coming and going: the pinned directory's
# own IN_DELETE_SELF waits until the last descriptor of it is closed, and the
# daemon holds one, so its removal (or a rename over its name) shows here.
PARENT_MASK = ANCESTOR_MASK | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
_READ_SIZE = 256 * 1024  # ~10,000 events per read(2)
_FAULT_ENV = "KVGROOMD_FAULT_OBSERVER"  # tests: the reader thread raises on this name
_MOUNTINFO = "/proc/self/mountinfo"


class _Libc:
    """inotify_init1 / inotify_add_watch / inotify_rm_watch from the C library."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes, self.init1.restype = [ctypes.c_int], ctypes.c_int
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int

    @staticmethod
    def check(result: int, what: str) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return result


_libc: _Libc | None = None


def _lib() -> _Libc:
    global _libc  # noqa: PLW0603 - loaded once, on first use
    if _libc is None:
        _libc = _Libc()
    return _libc


def parse_events(buf: bytes) -> list[tuple[int, int, int, str]]:
    """(wd, mask, cookie, name) of each inotify_event in `buf`."""
    out = []
    at, end = 0, len(buf)
    while at + _EVENT.size <= end:
        wd, mask, cookie, length = _EVENT.unpack_from(buf, at)
        at += _EVENT.size
        name = os.fsdecode(buf[at : at + length].rstrip(b"\0"))
        at += length
        out.append((wd, mask, cookie, name))
    return out


class Watcher:
    """One inotify instance and reader thread on the pinned directory, restartable."""

    def __init__(self, directory: PinnedDir, out: EventQueue) -> None:
        self.directory = directory
        self.out = out
        self.failure: ObserverDied | None = None
        self._fd = -1
        self._wake_r = self._wake_w = -1
        self._mounts: int = -1
        self._thread: threading.Thread | None = None
        self._dir_wd = -1
        self._parent_wd = -1
        self._ancestors: set[int] = set()
        self._fault = os.environ.get(_FAULT_ENV)

    def start(self) -> None:
        """Watch the pinned directory (raises OSError when that is impossible)."""
        self.stop()
        self.failure = None
        lib = _lib()
        self._fd = lib.check(lib.init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
        try:
            self._add_watches(lib)
            self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            with contextlib.suppress(OSError):  # no /proc: moves are still seen, mounts not
                self._mounts = os.open(_MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
            self._thread = worker(self._run, name="kvgroomd-inotify")
            self._thread.start()
        except BaseException:
            self._close_fds()
            raise

    def _add_watches(self, lib: _Libc) -> None:
        fd = self.directory.fd
        proc = f"/proc/self/fd/{fd}"
        if os.path.exists(proc):  # exactly the pinned inode, whatever the path names now
            self._dir_wd = lib.check(lib.add_watch(self._fd, proc.encode(), DIR_MASK),
                                     f"inotify_add_watch {self.directory.path}")  # fmt: skip
        else:  # no /proc: by path, then make sure the path still names it
            path = os.fsencode(self.directory.path)
            self._dir_wd = lib.check(lib.add_watch(self._fd, path, DIR_MASK | IN_DONT_FOLLOW),
                                     f"inotify_add_watch {self.directory.path}")  # fmt: skip
            self.directory.check()
        parent = os.path.realpath(self.directory.path.parent)
        self._parent_wd = lib.add_watch(self._fd, os.fsencode(parent), PARENT_MASK)
        for ancestor in _ancestors(self.directory.path):
            if ancestor == parent:
                continue  # one watch per inode: its mask would be replaced
            wd = lib.add_watch(self._fd, os.fsencode(ancestor), ANCESTOR_MASK)
            if wd >= 0 and wd not in (self._dir_wd, self._parent_wd):
                self._ancestors.add(wd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        if self._mounts >= 0:
            poller.register(self._mounts, select.POLLPRI)
            poller.poll(0)  # the first poll of mountinfo reports the table as changed
        try:
            while True:
                for fd, _ev in poller.poll():
                    if fd == self._wake_r:
                        return
                    if fd == self._mounts:
                        self.out.put(DirGone("mount table changed"))
                    elif fd == self._fd:
                        self._read()
        except BaseException as e:  # any end but stop(): reported on the queue, so the
            # daemon learns of it at once and needs no timer polling the thread
            self.failure = ObserverDied(f"{type(e).__name__}: {e}", traceback.format_exc())
            self.out.put(self.failure)

    def _read(self) -> None:
        try:
            buf = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        for wd, mask, _cookie, name in parse_events(buf):
            if mask & IN_Q_OVERFLOW:
                self.out.put(Lost("inotify queue overflow"))
            elif wd == self._dir_wd:
                self._on_dir_event(mask, name)
            elif wd == self._parent_wd and name:
                if name == self.directory.path.name:
                    self.out.put(DirGone("deleted" if mask & IN_DELETE else "moved"))
            elif mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT) and (
                wd == self._parent_wd or wd in self._ancestors
            ):
                self.out.put(DirGone("an enclosing directory moved or was deleted"))

    def _on_dir_event(self, mask: int, name: str) -> None:
        if name:
            if self._fault and name == self._fault:
                msg = f"injected observer fault on {name}"
                raise RuntimeError(msg)
            if mask & IN_ISDIR or not isinstance(classify(name), SnapshotName):
                return  # sub-directories are not used by ds4; nor other names by us
            if mask & (IN_MOVED_FROM | IN_DELETE):
                self.out.put(Gone(name))
            elif mask & (IN_MOVED_TO | IN_CLOSE_WRITE):
                self.out.put(Landed(name))
            elif mask & IN_CREATE:
                self.out.put(Landed(name, created=True))
        elif mask & IN_DELETE_SELF:
            self.out.put(DirGone("deleted"))
        elif mask & IN_MOVE_SELF:
            self.out.put(DirGone("moved"))
        elif mask & IN_UNMOUNT:
            self.out.put(DirGone("unmounted"))
        elif mask & IN_IGNORED:
            self.out.put(DirGone("watch removed"))

    def alive(self) -> bool:
        """False once the reader thread died (or was never started)."""
        t = self._thread
        return t is not None and t.is_alive() and self.failure is None

    def stop(self) -> None:
        """Stop the reader thread and close the inotify instance (idempotent)."""
        t, self._thread = self._thread, None
        if t is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"!")
            t.join(timeout=2)
        self._close_fds()

    def _close_fds(self) -> None:
        for name in ("_fd", "_wake_r", "_wake_w", "_mounts"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)
        self._dir_wd = self._parent_wd = -1
        self._ancestors = set()

    def close(self) -> None:
        """Stop watching for good."""
        self.stop()


def _ancestors(path: Path) -> list[str]:
    """The directories enclosing `path`, as written and with symlinks resolved."""
    out: list[str] = []
    for base in (Path(os.path.abspath(path)), Path(os.path.realpath(path))):
        for parent in base.parents:
            if str(parent) not in out:
                out.append(str(parent))
    return out
