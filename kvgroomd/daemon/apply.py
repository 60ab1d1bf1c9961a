"""The only code that deletes files.

Shell. `apply` acts on one Decision. It deletes only a regular `<40hex>.kv`
(or, for orphan cleanup, `<40hex>.kv.tmp.<pid>`) directly in the cache
directory, and only if that file is still the very one the policy judged.
Every operation goes through the pinned directory's descriptor, and before
each rename the configured path must still name that directory
(`PinnedDir.check`): a directory moved, swapped or unmounted stops deletion
with `Unpinned` before anything is touched.

Compare-and-delete: the file is first renamed to a private name, which takes
whatever inode the name holds at that instant, and the *renamed* file is then
compared with the decision's fingerprint and header bytes. So an engine
rename that lands between our check and our unlink can never make us delete
the new file: on a mismatch the file is put back (link(2) never replaces). A crash between the
rename and the unlink leaves a `.kvgroomd-unlinking.*` file that `recover`
puts back at the next start, so no file is lost that was not logged as
unlinked. The dry-run guard lives here, so no other code can forget it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kvgroomd import log as events
from kvgroomd.core.decision import Cause, Decision, Fingerprint
from kvgroomd.daemon.pinned import HELD_PREFIX, PinnedDir
from kvgroomd.format.names import SnapshotName, TempName, classify

QUARANTINE_PREFIX = HELD_PREFIX


class Result(StrEnum):
    """What `apply` did with a decision."""

    UNLINKED = "unlinked"
    WOULD_UNLINK = "would_unlink"  # dry run
    GONE = "gone"  # someone (the engine) removed it first: normal
    CHANGED = "changed"  # touched, truncated or replaced since the decision
    REFUSED = "refused"  # not a name or kind of file we may delete
    FAILED = "failed"  # an OS error (permissions, ...)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one decision and the bytes it freed."""

    result: Result
    freed: int = 0


def _may_delete(d: Decision) -> bool:
    kind = classify(d.name)
    if d.cause is Cause.ORPHAN_TEMP:
        return isinstance(kind, TempName)
    return isinstance(kind, SnapshotName)


def _os_error(e: OSError, log: Any, fields: dict[str, Any]) -> Outcome:
    """A failed lstat or rename: gone (the engine removed it first) is normal."""
    if isinstance(e, FileNotFoundError):
        log.debug(events.UNLINK_SKIPPED, why="gone", **fields)
        return Outcome(Result.GONE)
    log.warning(events.UNLINK_FAILED, why=e.strerror, errno=e.errno, **fields)
    return Outcome(Result.FAILED)


def apply(directory: PinnedDir, d: Decision, *, dry_run: bool, usage: int,
          log: Any, context: dict[str, Any] | None = None) -> Outcome:  # fmt: skip
    """Carry out one decision and log what happened (one line per decision).

    `usage` is the bytes in use before this unlink; the log reports it after.
    `context` adds fields shared by a pass (budget, ...).
    """
    # The inode lets a reader tell which version of a name went (names recur).
    fields = {"path": directory.path_of(d.name), "cause": str(d.cause), "inode": d.seen.ino,
              **d.fields, **(context or {})}  # fmt: skip
    if not _may_delete(d) or "/" in d.name:
        log.error(events.UNLINK_REFUSED, why="not a deletable name", **fields)
        return Outcome(Result.REFUSED)
    directory.check()  # the configured path still names this directory, or Unpinned
    try:
        st = directory.lstat(d.name)  # lstat: a symlink is never followed
    except OSError as e:
        return _os_error(e, log, fields)
    if not stat.S_ISREG(st.st_mode):
        log.error(events.UNLINK_REFUSED, why="not a regular file", **fields)
        return Outcome(Result.REFUSED)
    if Fingerprint.of(st) != d.seen:
        log.info(events.UNLINK_SKIPPED, why="changed", **fields)
        return Outcome(Result.CHANGED)
    size = st.st_size
    if dry_run:
        log.info(events.WOULD_UNLINK, dir_bytes=usage - size, **fields)
        return Outcome(Result.WOULD_UNLINK, size)
    return _compare_and_delete(directory, d, usage, log, fields)


def _compare_and_delete(directory: PinnedDir, d: Decision, usage: int, log: Any,
                        fields: dict[str, Any]) -> Outcome:  # fmt: skip
    held = f"{QUARANTINE_PREFIX}{d.name}"
    try:
        directory.rename(d.name, held)  # atomically takes whatever the name holds now
    except OSError as e:
        return _os_error(e, log, fields)
    st = directory.lstat(held)
    if not stat.S_ISREG(st.st_mode) or Fingerprint.of(st) != d.seen or not _same_header(
        directory, held, d
    ):
        _put_back(directory, held, d.name, log)  # the engine replaced it in between
        log.info(events.UNLINK_SKIPPED, why="changed", **fields)
        return Outcome(Result.CHANGED)
    try:
        os.unlink(held, dir_fd=directory.fd)
    except OSError as e:
        _put_back(directory, held, d.name, log)
        log.warning(events.UNLINK_FAILED, why=e.strerror, errno=e.errno, **fields)
        return Outcome(Result.FAILED)
    log.info(events.UNLINKED, dir_bytes=usage - st.st_size, **fields)
    return Outcome(Result.UNLINKED, st.st_size)


def _same_header(directory: PinnedDir, held: str, d: Decision) -> bool:
    """The held file still starts with the header the policy judged."""
    if d.header is None:
        return True
    try:
        fd = directory.open(held, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.pread(fd, len(d.header), 0) == d.header
    except OSError:
        return False
    finally:
        os.close(fd)


def _put_back(directory: PinnedDir, held: str, name: str, log: Any) -> None:
    """Restore a held file under its name unless a newer file took the name."""
    path = directory.path_of(name)
    try:
        directory.link(held, name)  # never replaces: a newer engine file wins
    except FileExistsError:
        # The engine renamed a newer file over the name while we held the old
        # one: its rename would have replaced the old file anyway.
        log.info(events.UNLINK_SKIPPED, why="superseded by a newer file", path=path,
                 inode=_inode(directory, held))  # fmt: skip
    except OSError as e:
        log.error(events.UNLINK_FAILED, why=f"could not restore: {e.strerror}",
                  path=path, held=directory.path_of(held))  # fmt: skip
        return
    try:
        os.unlink(held, dir_fd=directory.fd)
    except OSError:
        log.error(events.UNLINK_FAILED, why="could not drop held name",
                  path=directory.path_of(held))  # fmt: skip


def _inode(directory: PinnedDir, name: str) -> int | None:
    try:
        return directory.lstat(name).st_ino
    except OSError:
        return None


def held_files(directory: PinnedDir) -> Iterator[str]:
    """Names of files a crash left between rename and unlink."""
    try:
        with directory.scandir() as it:
            for e in it:
                if e.name.startswith(QUARANTINE_PREFIX) and e.is_file(follow_symlinks=False):
                    yield e.name
    except OSError:
        return


def recover(directory: PinnedDir, log: Any) -> int:
    """Put back files a crash left mid-delete; they were never logged as unlinked."""
    n = 0
    for held in held_files(directory):
        original = held.removeprefix(QUARANTINE_PREFIX)
        if not isinstance(classify(original), SnapshotName | TempName):
            continue
        directory.check()
        _put_back(directory, held, original, log)
        log.warning(events.UNLINK_RECOVERED, path=directory.path_of(original))
        n += 1
    return n
