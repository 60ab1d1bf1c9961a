"""The cache directory, pinned: one descriptor, every file operation relative to it.

Shell. A path is looked up again at every use, so a directory swapped for a
symlink (or renamed away and replaced) between two uses sends the second use
somewhere else: once, a reconcile that listed the cache then unlinked in
"the same" path deleted 26 of 30 snapshots of another directory. Here the
directory is opened once (O_DIRECTORY | O_NOFOLLOW: the configured path
itself must be a directory, not a symlink to one), its (dev, ino) kept, and
every listing, stat, open, rename, link and unlink goes through `dir_fd=`
that descriptor. `check()` says whether the configured path still names
that very directory; the deleter calls it before every unlink, so a moved,
swapped, deleted or unmounted directory stops all deletion at once
(`Unpinned`), and the daemon unpins, logs, waits and pins again.

`lock()` takes an exclusive flock(2) on the descriptor: one kvgroomd per
directory (a second one gets `Locked`, exit status 6).

Usage: `d = PinnedDir(path); d.pin(); ...; d.unpin()`. The object outlives
its pins, so whoever holds it (the groomer) sees the new directory after a
re-pin, and an unpinned one raises `Unpinned` on use.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from kvgroomd import log as events
from kvgroomd.format.names import SnapshotName, TempName, classify

HELD_PREFIX = ".kvgroomd-unlinking."  # apply.py's private name for a file mid-delete
EXIT_LOCKED = 6  # `run` and `groom`: another kvgroomd already grooms the directory


class Unpinned(RuntimeError):  # noqa: N818 - a state, like Stopped
    """The configured path no longer names the pinned directory (or nothing is
    pinned): nothing may be acted on until it is pinned again."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


class Locked(RuntimeError):  # noqa: N818 - a state
    """Another process holds the directory's lock: another kvgroomd grooms it."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"kvgroomd (pid {pid})" if pid else "kvgroomd"
        super().__init__(f"another {holder} already grooms {path}: one kvgroomd per "
                         "directory (stop the other one, or point this one elsewhere)")  # fmt: skip
        self.path = path
        self.pid = pid


@dataclass
class Census:
    """What a sample of a directory's entries is."""

    seen: int = 0
    ours: int = 0  # snapshots, the engine's temp files and our held files
    others: list[str] = field(default_factory=list)  # names of the rest (a few)
    n_others: int = 0

    @property
    def mostly_foreign(self) -> bool:
        """Enough entries to judge, and fewer than half are snapshots or temp files."""
        return self.seen >= 20 and self.ours * 2 < self.seen


class PinnedDir:
    """One cache directory, opened once and used through its descriptor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self.dev = 0
        self.ino = 0
        self.locked = False

    @classmethod
    def at(cls, path: Path, *, follow: bool = False) -> PinnedDir:
        """`path`, pinned now (no lock): for one-off readers and tests."""
        d = cls(path)
        d.pin(follow=follow)
        return d

    @classmethod
    def adopt(cls, fd: int) -> PinnedDir:
        """A directory another process pinned and passed on as `fd` (the
        start-up's reader helper): used as it is, never re-opened by path."""
        d = cls(Path(f"/proc/self/fd/{fd}"))
        st = os.fstat(fd)
        d._fd, d.dev, d.ino = fd, st.st_dev, st.st_ino
        return d

    # -- pinning -------------------------------------------------------------

    def pin(self, *, follow: bool = False) -> None:
        """Open the configured path (again). Raises OSError: ENOENT/ENOTDIR when
        it does not name a directory, ELOOP when it is a symlink (unless
        `follow`, for read-only tools)."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        fd = os.open(self.path, flags)
        st = os.fstat(fd)
        self.unpin()
        self._fd, self.dev, self.ino = fd, st.st_dev, st.st_ino

    def unpin(self) -> None:
        """Close the descriptor (and so drop the lock); idempotent."""
        fd, self._fd = self._fd, -1
        self.locked = False
        if fd >= 0:
            os.close(fd)

    @property
    def pinned(self) -> bool:
        """Whether a directory is pinned."""
        return self._fd >= 0

    @property
    def fd(self) -> int:
        """The pinned directory's descriptor (raises Unpinned when there is none)."""
        if self._fd < 0:
            raise Unpinned(self.path, "not pinned")
        return self._fd

    def lock(self) -> None:
        """Take the one-kvgroomd-per-directory lock; Locked when another holds it.
        A file system without flock on directories is not an error: nothing
        is refused there (OSError other than EWOULDBLOCK is passed on)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(self.path, lock_holder(self.dev, self.ino)) from None
        self.locked = True

    def why_not_named(self) -> str | None:  # noqa: PLR0911 - one answer per case
        """None while the configured path names the pinned directory; else why not."""
        if self._fd < 0:
            return "not pinned"
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return "gone: deleted, moved away or unmounted"
        except OSError as e:
            return f"cannot be looked up: {e.strerror}"
        if stat.S_ISLNK(st.st_mode):
            return "replaced by a symlink"
        if not stat.S_ISDIR(st.st_mode):
            return "replaced by something that is not a directory"
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            return "names another directory now (moved, replaced or mounted over)"
        return None

    def check(self) -> None:
        """Raise Unpinned unless the configured path names the pinned directory."""
        if (why := self.why_not_named()) is not None:
            raise Unpinned(self.path, why)

    # -- operations relative to the descriptor ------------------------------------

    def path_of(self, name: str) -> str:
        """The path of `name`, for log lines."""
        return str(self.path / name)

    def lstat(self, name: str) -> os.stat_result:
        """lstat(2) of an entry (never follows a symlink)."""
        return os.stat(_entry(name), dir_fd=self.fd, follow_symlinks=False)

    def open(self, name: str, flags: int) -> int:
        """open(2) of an entry; pass O_NOFOLLOW in `flags` for a file."""
        return os.open(_entry(name), flags | os.O_CLOEXEC, dir_fd=self.fd)

    def rename(self, src: str, dst: str) -> None:
        """rename(2) of one entry to another name in the same directory."""
        os.rename(_entry(src), _entry(dst), src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def link(self, src: str, dst: str) -> None:
        """link(2): a second name for an entry; never replaces `dst` (FileExistsError)."""
        os.link(_entry(src), _entry(dst), src_dir_fd=self.fd, dst_dir_fd=self.fd,
                follow_symlinks=False)  # fmt: skip

    @contextmanager
    def scandir(self) -> Iterator[Iterator[os.DirEntry[str]]]:
        """os.scandir of the pinned directory (entries' `path` is the bare name)."""
        # A descriptor of its own ("." relative to ours: the same directory,
        # no path lookup): a dup would share our position, and a forked
        # reader's, with this listing.
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            with os.scandir(fd) as it:
                yield it
        finally:
            os.close(fd)

    def census(self, limit: int = 2000) -> Census:
        """What the first `limit` entries are: enough to tell a cache directory
        from, say, a home directory, without listing 100,000 files."""
        out = Census()
        with self.scandir() as it:
            for entry in it:
                out.seen += 1
                if isinstance(classify(entry.name), SnapshotName | TempName) or (
                    entry.name.startswith(HELD_PREFIX)
                ):
                    out.ours += 1
                else:
                    out.n_others += 1
                    if len(out.others) < 5:
                        out.others.append(entry.name[:80])
                if out.seen >= limit:
                    break
        return out

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> PinnedDir:
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None,
                 _tb: TracebackType | None) -> None:  # fmt: skip
        self.unpin()


def warn_if_unusual(directory: PinnedDir, log: Any) -> None:
    """Warn when most of a directory's entries are not snapshots: maybe not a
    cache directory at all (kvgroomd still touches only snapshots there)."""
    census = directory.census()
    if census.mostly_foreign:
        log.warning(events.DIR_UNUSUAL, cache_dir=str(directory.path), entries_seen=census.seen,
                    snapshots_or_temps=census.ours, others=census.n_others,
                    examples=census.others)  # fmt: skip


def _entry(name: str) -> str:
    """`name` if it is one entry of a directory; anything else is a bug."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"not a directory entry name: {name[:80]!r}")
    return name


_LOCK_LINE = re.compile(r"^\d+:\s+FLOCK\s+\S+\s+WRITE\s+(\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s")


def lock_holder(dev: int, ino: int) -> int | None:
    """The pid holding a flock on (dev, ino), from /proc/locks (None when
    unknown: /proc/locks hidden, as under ProcSubset=pid)."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return None
    for line in lines:
        m = _LOCK_LINE.match(line)
        if m and int(m[4]) == ino and (int(m[2], 16), int(m[3], 16)) == (
            os.major(dev), os.minor(dev)
        ):
            return int(m[1])
    return None


def is_missing(e: OSError) -> bool:
    """The path does not (yet) name a directory: wait for it, do not fail."""
    return e.errno in (errno.ENOENT, errno.ENOTDIR)


def is_symlink(e: OSError) -> bool:
    """pin() met a symlink where the directory should be."""
    return e.errno == errno.ELOOP
