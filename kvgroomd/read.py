"""Reading snapshot files: lstat, the header and text head, the text.

Shell. Opens with O_NOFOLLOW|O_NONBLOCK (a symlink is never followed, a FIFO
named like a snapshot never blocks) and reports anything that is not a usable
snapshot as `Invalid` with a reason: such a file is logged, never counted,
never deleted.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from kvgroomd.decision import Fingerprint
from kvgroomd.index import HEAD_BYTES, Snapshot, head_key
from kvgroomd.names import SnapshotName
from kvgroomd.snapshot import PREFIX_BYTES, Header, Unparsable, check_size

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Invalid:
    """A snapshot-named entry kvgroomd will not act on, and why."""

    name: str
    why: str  # short | magic | unknown_format | invalid | truncated | not_regular | unreadable
    detail: str
    seen: Fingerprint | None = None


def fingerprint(st: os.stat_result) -> Fingerprint:
    """The identity the deleter re-checks before it unlinks."""
    return Fingerprint.of(st)


def _open(path: Path) -> int | Invalid | None:
    try:
        return os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            return Invalid(path.name, "not_regular", "symlink")
        return Invalid(path.name, "unreadable", f"{e.strerror} (errno {e.errno})")


def read_snapshot(directory: Path, name: SnapshotName) -> Snapshot | Invalid | None:
    """Parse `<sha>.kv` in `directory`; None when it no longer exists."""
    fd = _open(directory / name.name)
    if not isinstance(fd, int):
        return fd
    try:
        st = os.fstat(fd)
        seen = fingerprint(st)
        if not stat.S_ISREG(st.st_mode):
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "special file"
            return Invalid(name.name, "not_regular", kind, seen)
        try:
            raw = os.pread(fd, PREFIX_BYTES + HEAD_BYTES, 0)
        except OSError as e:
            return Invalid(name.name, "unreadable", e.strerror or str(e), seen)
    finally:
        os.close(fd)
    header = Header.parse(raw)
    if isinstance(header, Header):
        header = check_size(header, st.st_size) or header
    if isinstance(header, Unparsable):
        return Invalid(name.name, header.why, header.detail, seen)
    head = head_key(raw[PREFIX_BYTES:], header.text_bytes)
    return Snapshot(name.name, name.sha, header, seen, head)


def read_text(directory: Path, snap: Snapshot) -> bytes | None:
    """The text of `snap`, if the file is still the same inode and whole."""
    fd = _open(directory / snap.name)
    if not isinstance(fd, int):
        return None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (snap.seen.dev, snap.seen.ino):
            return None  # replaced since it was indexed; its own event follows
        n = snap.header.text_bytes
        text = os.pread(fd, n, PREFIX_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    return text if len(text) == n else None
