"""The activity trace recorder: what the cache saw, appended as it happens.

Shell, and a thin one. DiskGroomer hands it every note the core makes (a
file landed, was rewritten in place, left; which files a new text strictly
extends), every decision with what became of it, the state at start-up; the
daemon hands it the config on a reload. It adds what the core cannot know:
which removed files each landing extends (daemon/tracegone.py), and why the
engine removed a file (told by the landing after it). It writes lines in
the format of `kvgroomd.sim.trace` (which the replay reads): no prompt
text, only keyed hashes of the names, lengths and prefix relations.

Buffered: a record is a string appended to a list; the list is written with
one write(2) when it holds FLUSH_BYTES, or when the loop wakes up and the
oldest record is FLUSH_S old (the loop sleeps no longer than that while
records wait). A crash loses at most that much. Size-bounded: when the file
passes max_size / segments it is renamed to `PATH.1` (`PATH.1` to `PATH.2`,
..., the oldest renamed over, so never more than `segments` files) and a new
`PATH` starts with a header, the config and the directory's state, so any
suffix of the files replays on its own.

Where: a relative path is under kvgroomd's state directory ($STATE_DIRECTORY,
which the shipped unit's StateDirectory=kvgroomd grants); never inside the
cache directory. The hash key is kept in the state directory (`trace.key`,
0600), not in the trace: a trace alone cannot confirm a guessed prompt.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kvgroomd import log as events
from kvgroomd.config import Config, ConfigError, TraceSettings, trace_inside
from kvgroomd.core.decision import Decision, Result
from kvgroomd.core.groomer import Groomer, Note, Texts
from kvgroomd.core.index import TAIL_KNOWN
from kvgroomd.daemon.apply import state_directory
from kvgroomd.daemon.tracegone import GoneTexts
from kvgroomd.format.header import Header, Reason
from kvgroomd.sim import trace as fmt

if TYPE_CHECKING:
    from kvgroomd.core.index import Index, Snapshot

FLUSH_BYTES = 64 * 1024
FLUSH_S = 2.0
# An engine removal waits this long for the next landing, which tells an
# eviction (room for that store) from a consume (sim/trace.engine_cause).
PENDING_S = 10.0
# kvgroomd's own unlinks this recent may not have happened yet when the
# engine listed the directory for the eviction now seen: counted as there.
RACE_S = 2.0
# The watcher reports a file the deleter renamed aside and put back (gone,
# then landed) this soon after; a removal of it later is the engine's.
PUT_BACK_S = 2.0
KEY_FILE = "trace.key"
_CODES = {r.label: int(r) for r in Reason}
_GONE = (Result.UNLINKED, Result.GONE)
_SAVES = (Reason.EVICT.label, Reason.SHUTDOWN.label)
_SINCE_SAVE_MAX = 4096  # stores of one request; a server that never switches stops here


@dataclass(frozen=True, slots=True)
class _Removed:
    """An engine removal waiting for the next landing."""

    t: int  # ms since the header's t0
    mono: float
    id: str
    name: str
    tokens: int
    text_bytes: int
    usage: int  # bytes in the directory before it, as the engine may have seen them
    consumable: bool  # it landed before the last session switch (evict/shutdown save)
    # The size of the first landing after it, when that landing's text could
    # not be read (gone already): the next landing's text tells instead.
    next_size: int | None = None


class Recorder:
    """Appends the trace of one cache directory to `path` (and rotates it)."""

    def __init__(self, path: Path, settings: TraceSettings, ids: fmt.Ids, config: Config,
                 log: Any, *, clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.path = path
        self.segments = settings.segments
        self.limit = max(settings.max_size // settings.segments, 1)
        self.ids = ids
        self.log = log
        self.clock = clock
        self.mono = mono
        self.config = config
        self.core: Groomer | None = None
        self._buf: list[str] = []
        self._buf_bytes = 0
        self._since = 0.0  # mono time of the oldest buffered record
        self._failed = False
        self._extends: dict[str, set[str]] = {}  # id -> ids it extends (files present)
        # Engine removals waiting for the next landing, which tells why (_resolve)
        self._removed: list[_Removed] = []
        self._since_save: set[str] = set()  # landed since the last evict/shutdown save
        # Files removed lately, and landings to check against them (X records
        # the core cannot make: it proves relations among files present).
        self._gone = GoneTexts()
        self.texts: Texts | None = None
        self._unlinked: collections.deque[tuple[float, int]] = collections.deque()  # (mono, size)
        # Files kvgroomd's deleter renamed aside and put back (it found them
        # changed): the watcher then reports them gone and landed again, which
        # is no removal by the engine (name -> mono time).
        self._put_back: dict[str, float] = {}
        self.version = version()  # the header says which kvgroomd wrote it
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._t0 = clock()
        self._begin(start=True)

    # -- what the daemon tells it ---------------------------------------------------

    def attach(self, core: Groomer, texts: Texts | None = None) -> None:
        """The core whose index a rotated file's opening state is taken
        from; `texts`: where a landing's text is read when it may tell a
        consume (the landing extends the removed file) from an eviction."""
        self.core = core
        self.texts = texts

    def note(self, note: Note) -> None:
        """A note of the core (daemon/groom.py logs each one): landings,
        in-place rewrites, removals by the engine, proven prefix relations."""
        event, f = note.event, note.fields
        if self._gone.waiting and event != events.UPDATED:
            self._extend_gone()  # before what this change may remove
        if event == events.UPDATED:
            self._add(fmt.UPDATED, self._id(f["name"]), f["hits"], f["last_used"], f["size"])
        elif event in (events.ADDED, events.REPLACED):
            kind = fmt.ADDED if event == events.ADDED else fmt.REPLACED
            fid = self._id(f["name"])
            if self._removed:
                self._resolve(f["size"], fid, f["name"])
            if f["reason"] in _SAVES:  # a session switch: the lookup comes next
                self._since_save.clear()
            elif len(self._since_save) < _SINCE_SAVE_MAX:
                self._since_save.add(fid)
            family, tail = self._keys(f["name"])
            self._add(kind, fid, _CODES.get(f["reason"], 0), f["tokens"], f["size"],
                      f["text_bytes"], f["model_id"], f["quant_bits"], f["ctx_size"],
                      f["created_at"], f["hits"], f["last_used"], family)  # fmt: skip
            self._gone.landed(f["name"], tail)
            if self._gone.full or (self.core is not None
                                   and f["name"] in self.core.ledger.pending):  # fmt: skip
                self._extend_gone(f["name"])  # kvgroomd removes it next: read it now
        elif event == events.EXTENDS:
            fid = self._id(f["name"])
            known = self._extends.setdefault(fid, set())
            new = [o for o in map(self._id, f["extends"]) if o not in known]
            if new:
                known.update(new)
                self._add(fmt.EXTENDS, fid, new)
        elif event == events.REMOVED:
            back = self._put_back.pop(f["name"], None)
            if back is not None and back >= self.mono() - PUT_BACK_S:
                return  # our own rename aside, seen late
            self._gone.removed(f["name"], int(f.get("text_bytes", 0)))
            self._engine_removed(f["name"], int(f.get("tokens", 0)), int(f.get("text_bytes", 0)),
                                 int(f["dir_bytes"]) + int(f["size"]))  # fmt: skip

    def decided(self, d: Decision, result: Result) -> None:
        """One of kvgroomd's decisions, and what the deleter did with it."""
        fid = self._id(d.name)
        by = d.fields.get("superseded_by")
        self._add(fmt.DECIDED, fid, str(d.cause), str(result),
                  None if by is None else self._id(f"{by}.kv"))  # fmt: skip
        h = Header.parse(d.header) if d.header is not None and result in _GONE else None
        if isinstance(h, Header):
            snap = self.core.ledger.pending.get(d.name) if self.core is not None else None
            self._gone.removed(d.name, h.text_bytes, None if snap is None else snap.tail)
        if result is Result.GONE and d.header is not None:  # the engine came first
            usage = self.core.usage if self.core is not None else 0
            if isinstance(h, Header):
                self._engine_removed(d.name, h.tokens, h.text_bytes, usage)
        elif result in _GONE:
            self._extends.pop(fid, None)
            self._unlinked.append((self.mono(), d.seen.size))
        elif result in (Result.CHANGED, Result.REFUSED):
            now = self.mono()
            if len(self._put_back) > 1024:  # reports that never came: forget them
                self._put_back = {k: v for k, v in self._put_back.items()
                                  if v > now - PUT_BACK_S}  # fmt: skip
            self._put_back[d.name] = now

    def present(self, decided: list[Decision]) -> None:
        """The start-up scan's result: every file found, the indexed ones and
        those already decided on (still on disk until settled)."""
        extra = []
        for d in decided:
            if d.header is not None and isinstance(h := Header.parse(d.header), Header):
                extra.append((d.name, h, d.seen.size))
        self._state(extra, start=True)

    def reloaded(self, config: Config) -> None:
        """A reload put `config` in force."""
        self.config = config
        self._add(fmt.CONFIG, fmt.config_record(config.effective()))

    # -- writing ------------------------------------------------------------------------

    def flush_at(self) -> float | None:
        """Monotonic time by which the buffered records are due (None: none)."""
        due = [self._since + FLUSH_S] if self._buf else []
        if self._removed:
            due.append(self._removed[0].mono + PENDING_S)
        return min(due) if due else None

    def flush_if_due(self) -> None:
        """Write the buffer if it is FLUSH_S old (the loop, once per wake-up);
        engine removals no landing followed for PENDING_S are settled."""
        now = self.mono()
        if self._removed and now >= self._removed[0].mono + PENDING_S:
            self._resolve(None, None, None)
        if self._gone.waiting:
            self._extend_gone()
        if self._buf and now >= self._since + FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered; rotate when the file is full."""
        if not self._buf:
            return
        data = ("\n".join(self._buf) + "\n").encode()
        self._buf.clear()
        self._buf_bytes = 0
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            self._size += len(data)
            if self._size >= self.limit:
                self._rotate()
        except OSError as e:
            if not self._failed:  # once: a full disk must not fill the log too
                self._failed = True
                self.log.error(events.TRACE_FAILED, path=str(self.path), error=e.strerror,
                               action="records dropped until a write succeeds")  # fmt: skip
        else:
            self._failed = False

    def close(self) -> None:
        """Write what is left and close the file."""
        if self._removed:
            self._resolve(None, None, None)
        if self._gone.waiting:
            self._extend_gone()
        self.flush()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = -1

    # -- internals ---------------------------------------------------------------------

    def _engine_removed(self, name: str, tokens: int, text_bytes: int, usage_before: int) -> None:
        """The engine removed a file: why is told by what lands next."""
        fid = self._id(name)
        self._extends.pop(fid, None)
        t, mono = int((self.clock() - self._t0) * 1000), self.mono()
        while self._unlinked and self._unlinked[0][0] < mono - RACE_S:
            self._unlinked.popleft()
        usage_before += sum(size for _, size in self._unlinked)  # the engine may have seen them
        self._removed.append(_Removed(t, mono, fid, name, tokens, text_bytes, usage_before,
                                      fid not in self._since_save))  # fmt: skip
        if not self._buf:
            self._since = self.mono()  # the loop's flush deadline covers the wait too

    def _resolve(self, next_size: int | None, next_id: str | None,
                 next_name: str | None) -> None:  # fmt: skip
        """Write the waiting engine removals, their cause told by the landing
        that came next (None: none in PENDING_S). A removal that may be a
        consume waits on when that landing's text cannot be read (the next
        store of the live session tells as well)."""
        budget, cold_max = self.config.engine_budget, self.config.engine.cold_max_tokens
        text: bytes | None = None
        read = False
        waiting = []
        for r in self._removed:
            size = next_size if r.next_size is None else r.next_size
            extended = False
            if next_name is not None and r.consumable and 0 < cold_max < r.tokens and (
                    r.id != next_id):  # a consume, or an eviction?  # fmt: skip
                if not read:
                    text, read = self._text(next_name), True
                if text is None:
                    waiting.append(replace(r, next_size=size))
                    continue
                extended = len(text) > r.text_bytes and hashlib.sha1(
                    text[: r.text_bytes], usedforsecurity=False).hexdigest() == r.name[:40].lower()
            cause = fmt.engine_cause(r.tokens, r.usage, size, engine_budget=budget,
                                     cold_max_tokens=cold_max, same_name=r.id == next_id,
                                     extended=extended, consumable=r.consumable)  # fmt: skip
            self._line(fmt.line(fmt.ENGINE, r.t, r.id, cause))
        self._removed = waiting

    def _extend_gone(self, only: str | None = None) -> None:
        """X records for the landings waiting (or `only`): which removed files
        each strictly extends (daemon/tracegone.py)."""
        for name, olds in self._gone.check(self._text, only):
            self._add(fmt.EXTENDS, self._id(name), [self._id(o) for o in olds])

    def _keys(self, name: str) -> tuple[str, int | None]:
        """A landing's text family (its head key, keyed-hashed) and its tail
        (its last 8 text bytes, None when not known)."""
        snap = self._snap(name)
        return ("", None) if snap is None else (self.ids.family(snap.head), snap.tail)

    def _snap(self, name: str) -> Snapshot | None:
        """A landing as the core took it: indexed, or decided on already (a
        file kvgroomd removes at once, e.g. for the budget, is out of the
        index until the deleter settles it, and still on disk meanwhile)."""
        if self.core is None:
            return None
        return self.core.index.get(name) or self.core.ledger.pending.get(name)

    def _text(self, name: str) -> bytes | None:
        """The text of a landing, if it can be read."""
        snap = self._snap(name)
        if snap is None or self.texts is None:
            return None
        try:
            return self.texts.text(snap)
        except OSError:
            return None

    def _id(self, name: str) -> str:
        return self.ids.of(name)

    def _add(self, kind: str, *fields: object) -> None:
        self._line(fmt.line(kind, int((self.clock() - self._t0) * 1000), *fields))

    def _line(self, text: str) -> None:
        if not self._buf:
            self._since = self.mono()
        self._buf.append(text)
        self._buf_bytes += len(text) + 1
        if self._buf_bytes >= FLUSH_BYTES:
            self.flush()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                       | os.O_NOFOLLOW, 0o600)  # fmt: skip

    def _begin(self, *, start: bool) -> None:
        """A header (a daemon start, or a new file) and the config in force."""
        t0, self._t0 = self._t0, self.clock()
        shift = int((t0 - self._t0) * 1000)  # waiting removals keep their time
        self._removed = [replace(r, t=r.t + shift) for r in self._removed]
        text = fmt.header_line(self._t0, self.ids.key_id, start=start, version=self.version)
        if not self._buf:
            self._since = self.mono()
        self._buf.append(text)
        self._buf_bytes += len(text) + 1
        self._add(fmt.CONFIG, fmt.config_record(self.config.effective()))

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        for i in range(self.segments - 1, 0, -1):
            older = self.path if i == 1 else self.path.with_name(f"{self.path.name}.{i - 1}")
            with contextlib.suppress(FileNotFoundError):
                # Renamed over the oldest: the trace keeps `segments` files.
                os.replace(older, self.path.with_name(f"{self.path.name}.{i}"))
        self._fd = self._open()
        self._size = 0
        self._begin(start=False)
        self._state([], start=False)
        data = ("\n".join(self._buf) + "\n").encode()
        self._buf.clear()
        self._buf_bytes = 0
        os.write(self._fd, data)
        self._size = len(data)

    def _state(self, extra: list[tuple[str, Header, int]], *, start: bool) -> None:
        """P records of every indexed file (and `extra`), the relations
        known among them, then S."""
        count = 0
        present: set[str] = set()
        if self.core is not None:
            count += self._indexed(self.core.index, present, start=start)
        for name, h, size in extra:
            fid = self._id(name)
            present.add(fid)
            self._add(fmt.PRESENT, fid, int(h.reason), h.tokens, size, h.text_bytes, h.model_id,
                      h.quant_bits, h.ctx_size, h.created_at, h.hits, h.last_used,
                      "")  # fmt: skip
            count += 1
        for fid in [f for f in self._extends if f not in present]:
            del self._extends[fid]
        for fid, olds in self._extends.items():
            if keep := sorted(o for o in olds if o in present):
                self._add(fmt.EXTENDS, fid, keep)
        self._add(fmt.STATE, count)

    def _indexed(self, index: Index, present: set[str], *, start: bool) -> int:
        cols = index.columns()
        names = index.names_at(np.arange(len(cols)))
        fields = ("reason", "tokens", "size", "text_bytes", "model_id", "quant_bits",
                  "ctx_size", "created_at", "hits", "last_used")  # fmt: skip
        columns = [cols[f].tolist() for f in fields]
        heads = cols["head"].tolist()
        for i, name in enumerate(names):
            fid = self._id(name)
            present.add(fid)
            self._add(fmt.PRESENT, fid, *(c[i] for c in columns), self.ids.family(heads[i]))
        if start:  # the files found: their tails, should the engine remove them
            newest = np.argsort(cols["created_at"], kind="stable")[-self._gone.tails_kept :]
            for i in newest[(cols["flags"][newest] & TAIL_KNOWN) != 0].tolist():
                self._gone.seen(names[i], int(cols["tail"][i]))
        return len(names)


def version() -> str:
    """The installed kvgroomd version, for the header."""
    from importlib.metadata import PackageNotFoundError  # noqa: PLC0415 - ~50 ms: when tracing
    from importlib.metadata import version as installed  # noqa: PLC0415

    try:
        return installed("kvgroomd")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _key(directory: Path, log: Any) -> bytes:
    """The trace's hash key, kept in the state directory (made once, 0600);
    without one a key for this run only (ids then do not link across restarts)."""
    path = directory / KEY_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, os.urandom(fmt.KEY_BYTES))
            finally:
                os.close(fd)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            key = os.read(fd, fmt.KEY_BYTES + 1)
        finally:
            os.close(fd)
        if len(key) == fmt.KEY_BYTES:
            return key
        why = f"{path} is not a {fmt.KEY_BYTES}-byte key"
    except OSError as e:
        why = f"{path}: {e.strerror}"
    log.warning(events.TRACE_KEY_EPHEMERAL, why=why,
                consequence="file ids of this run do not link to other runs' in the trace")
    return os.urandom(fmt.KEY_BYTES)


def trace_path(settings: TraceSettings) -> Path:
    """Where the trace goes: a relative path is under the state directory."""
    path = settings.path
    return path if path.is_absolute() else state_directory() / path


def open_trace(config: Config, log: Any, *, clock: Callable[[], float] = time.time,
               mono: Callable[[], float] = time.monotonic) -> Recorder | None:  # fmt: skip
    """The recorder `config.trace` asks for, or None (off, or it cannot be
    opened: said in the log; the daemon runs on without it). Raises
    ConfigError for a path inside the cache directory."""
    if config.trace is None:
        return None
    path = trace_path(config.trace)
    if why := trace_inside(Path(os.path.abspath(path)), config.cache_dir):
        raise ConfigError(f"trace.path: {why}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        recorder = Recorder(path, config.trace, fmt.Ids(_key(state_directory(), log)), config,
                            log, clock=clock, mono=mono)  # fmt: skip
    except OSError as e:
        log.error(events.TRACE_FAILED, path=str(path), error=e.strerror,
                  action="running without a trace")  # fmt: skip
        return None
    log.info(events.TRACE_STARTED, path=str(path), max_size=config.trace.max_size,
             segments=config.trace.segments, ids=recorder.ids.key_id)  # fmt: skip
    return recorder
