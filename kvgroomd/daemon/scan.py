"""One read-only look at a whole cache directory: every entry, sorted by kind.

Shell. Used by `kvgroomd ls` and `stats` (which must work on a directory the
user can only read: nothing here opens for writing, creates or renames) and,
for temp files, by the groomer's opt-in leak cleanup. Everything is read
relative to the pinned directory's descriptor (pinned.py).

Whether a temp file's writer lives is `os.kill(pid, 0)`: ProcessLookupError
means no such process, PermissionError means one exists (owned by someone
else). Limitation: the pid in a temp name is from the *writer's* PID
namespace. For an engine in a container, a pid here may be unrelated (looks
alive: the file is kept, which is safe) or absent (looks gone while the
engine still writes), which is why orphan cleanup also requires an old mtime.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from kvgroomd.core.cleanup import TempFile
from kvgroomd.core.facts import Invalid
from kvgroomd.core.index import Snapshot
from kvgroomd.daemon.pinned import HELD_PREFIX, PinnedDir
from kvgroomd.daemon.read import DETECTING, fingerprint, read_snapshot
from kvgroomd.format.header import Header, read_header
from kvgroomd.format.layouts import DETECT, MAX_PREFIX, Reading
from kvgroomd.format.names import SnapshotName, TempName, classify

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Foreign:
    """An entry that is neither a snapshot nor a temp file: never touched."""

    name: str
    kind: str  # file | directory | symlink | special | held
    size: int | None
    mtime: float | None


@dataclass
class DirScan:
    """Everything in a cache directory, by kind."""

    snapshots: list[Snapshot] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)
    temps: list[TempFile] = field(default_factory=list)
    foreign: list[Foreign] = field(default_factory=list)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists in our PID namespace."""
    if pid <= 0:  # 0 and negatives would signal process groups, not a writer
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    except OverflowError:
        return False  # larger than any pid
    return True


def _expected_size(directory: PinnedDir, name: str, engine: str) -> int | None:
    """The final size a temp file will have, from its header (spec §3)."""
    try:
        fd = directory.open(name, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        raw = os.pread(fd, MAX_PREFIX, 0)  # the longest header of any layout
    except OSError:
        return None
    finally:
        os.close(fd)
    header = read_header(raw, engine=engine)  # no size yet: the file is being written
    return header.min_file_size if isinstance(header, Header) else None


def _temp(directory: PinnedDir, entry: os.DirEntry[str], name: TempName,
          engine: str = DETECT) -> TempFile | None:  # fmt: skip
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None  # renamed into place meanwhile
    if not stat.S_ISREG(st.st_mode):
        return None
    return TempFile(name.name, name.sha, name.pid, pid_alive(name.pid), fingerprint(st),
                    _expected_size(directory, name.name, engine))  # fmt: skip


def scan_temps(directory: PinnedDir) -> list[TempFile]:
    """The regular `<sha>.kv.tmp.<pid>` files in `directory`."""
    out = []
    with directory.scandir() as it:
        for entry in it:
            kind = classify(entry.name)
            if isinstance(kind, TempName) and (t := _temp(directory, entry, kind)):
                out.append(t)
    return out


def _foreign(entry: os.DirEntry[str]) -> Foreign | None:
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(st.st_mode):
        kind = "directory"
    elif not stat.S_ISREG(st.st_mode):
        kind = "special"
    elif entry.name.startswith(HELD_PREFIX):
        kind = "held"  # kvgroomd crashed mid-delete; the next start puts it back
    else:
        kind = "file"
    size = st.st_size if kind in ("file", "held") else None
    return Foreign(entry.name, kind, size, st.st_mtime)


def scan_directory(directory: PinnedDir, *, snapshots: bool = True,
                   reading: Reading = DETECTING) -> DirScan:  # fmt: skip
    """Read every entry of `directory` (headers only; texts are read later),
    snapshots as `reading` says (the engine's layout: format/layouts.py).
    `snapshots=False`: only temp files and foreign entries (the caller reads
    the snapshots in bulk)."""
    out = DirScan()
    with directory.scandir() as it:  # entries stat() through its descriptor: use them inside
        for entry in sorted(it, key=lambda e: e.name):
            _sort(directory, entry, out, snapshots=snapshots, reading=reading)
    return out


def _sort(directory: PinnedDir, entry: os.DirEntry[str], out: DirScan, *,
          snapshots: bool, reading: Reading) -> None:  # fmt: skip
    kind = classify(entry.name)
    if isinstance(kind, SnapshotName):
        if not snapshots:
            return
        got = read_snapshot(directory, kind, reading=reading)
        if isinstance(got, Invalid):
            out.invalid.append(got)
        elif got is not None:
            out.snapshots.append(got)
    elif isinstance(kind, TempName):
        if t := _temp(directory, entry, kind, reading.engine):
            out.temps.append(t)
        elif f := _foreign(entry):  # a directory or symlink named like a temp
            out.foreign.append(f)
    elif f := _foreign(entry):
        out.foreign.append(f)
