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

Only a held file that is provably ours is ever touched by `recover`: before
each rename the deleter records, in a small journal in kvgroomd's state
directory ($STATE_DIRECTORY as systemd's StateDirectory= sets it, else
$XDG_STATE_HOME/kvgroomd or ~/.local/state/kvgroomd), the directory's and
the file's identity (dev, inode, size, mtime) and the held name, and clears
it once the file is unlinked or put back. A file named like a held one that
the journal does not describe exactly (another tool's, a copy, a restore, a
crash of an older kvgroomd) is left alone and logged.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvgroomd import log as events
from kvgroomd.core.decision import Cause, Decision, Fingerprint, Result
from kvgroomd.daemon.pinned import HELD_PREFIX, PinnedDir
from kvgroomd.format.names import SnapshotName, TempName, classify

QUARANTINE_PREFIX = HELD_PREFIX


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
    journal = journal_for(directory, log)
    journal.hold(directory, held, d.seen)  # before the rename: a crash after it is provable
    try:
        try:
            directory.rename(d.name, held)  # atomically takes whatever the name holds now
        except OSError as e:
            return _os_error(e, log, fields)
        st = directory.lstat(held)
        if Fingerprint.of(st) != d.seen:
            journal.hold(directory, held, Fingerprint.of(st))  # what the rename took
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
    finally:
        journal.release()
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


# -- the journal of what is held ------------------------------------------------


def state_directory() -> Path:
    """Where kvgroomd keeps its own state (the held-file journal)."""
    if systemd := os.environ.get("STATE_DIRECTORY"):  # StateDirectory=; may list several
        return Path(systemd.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "kvgroomd"


class Journal:
    """At most one record: the file the deleter holds under a private name.

    One small file per cache directory (named after its configured path),
    rewritten in place (pwrite + ftruncate, no fsync: it has to survive a
    killed process, not a power cut; after a power cut a held file may be
    unprovable and is then left alone, and logged)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd = -1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)

    def hold(self, directory: PinnedDir, held: str, seen: Fingerprint) -> None:
        """Record that `held` in `directory` is ours, as `seen`."""
        if self._fd < 0:
            return
        record = json.dumps({"dir": [directory.dev, directory.ino], "held": held,
                             "file": [seen.dev, seen.ino, seen.size, seen.mtime_ns]})  # fmt: skip
        data = record.encode() + b"\n"
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def release(self) -> None:
        """Nothing is held any more."""
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)

    def record(self) -> dict[str, Any] | None:
        """The held file on record, if any."""
        if self._fd < 0:
            return None
        try:
            raw = os.pread(self._fd, 4096, 0)
            got = json.loads(raw) if raw.strip() else None
        except (OSError, ValueError):
            return None
        return got if isinstance(got, dict) else None

    def proves(self, directory: PinnedDir, held: str, st: os.stat_result) -> bool:
        """Whether the record describes exactly this held file in this directory."""
        rec = self.record()
        if rec is None:
            return False
        seen = Fingerprint.of(st)
        return (rec.get("dir") == [directory.dev, directory.ino] and rec.get("held") == held
                and rec.get("file") == [seen.dev, seen.ino, seen.size, seen.mtime_ns])  # fmt: skip


_journals: dict[str, Journal] = {}


def journal_path(cache_dir: Path) -> Path:
    """The journal file of a cache directory (by its configured path)."""
    key = hashlib.sha1(os.fsencode(os.path.abspath(cache_dir))).hexdigest()[:16]
    return state_directory() / f"held-{key}.json"


def journal_for(directory: PinnedDir, log: Any) -> Journal:
    """The journal of `directory`, opened once; without a usable state
    directory a journal that records nothing (said once in the log)."""
    key = str(directory.path)
    if (journal := _journals.get(key)) is None:
        path = journal_path(directory.path)
        try:
            journal = Journal(path)
        except OSError as e:
            log.warning(events.JOURNAL_UNAVAILABLE, path=str(path), error=e.strerror,
                        consequence="a file held when kvgroomd is killed mid-unlink will "
                        "be left under its held name, and logged, at the next start")  # fmt: skip
            journal = Journal(None)
        _journals[key] = journal
    return journal


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
    """Put back the file a crash left mid-delete (never logged as unlinked),
    if the journal proves it ours; leave and log any other held-looking file."""
    journal = journal_for(directory, log)
    n = 0
    for held in sorted(held_files(directory)):
        original = held.removeprefix(QUARANTINE_PREFIX)
        try:
            st = directory.lstat(held)
        except OSError:
            continue
        if not isinstance(classify(original), SnapshotName | TempName) or not journal.proves(
            directory, held, st
        ):
            log.warning(events.RECOVER_REFUSED, path=directory.path_of(held), inode=st.st_ino,
                        size=st.st_size, why="named like a file kvgroomd holds mid-unlink, "
                        "but not one it recorded: left alone")  # fmt: skip
            continue
        directory.check()
        taken = _exists(directory, original)
        _put_back(directory, held, original, log)
        journal.release()
        action = "dropped: a newer file has the name" if taken else "put back"
        log.warning(events.UNLINK_RECOVERED, path=directory.path_of(original), inode=st.st_ino,
                    action=action)  # fmt: skip
        n += 1
    return n


def _exists(directory: PinnedDir, name: str) -> bool:
    try:
        directory.lstat(name)
    except FileNotFoundError:
        return False
    return True
