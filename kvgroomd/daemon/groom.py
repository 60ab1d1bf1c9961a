"""The decision core, driven against a real directory.

Shell, and a thin one: it lists and reads files (read.py), hands the facts to
the pure core (core/groomer.py), gives each decision to the only deleter
(apply.py), tells the core what became of it, and logs the core's notes.
Used by the daemon for every event and by `kvgroomd groom` for one pass. It
owns no clock: callers pass `now`.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kvgroomd import log as events
from kvgroomd.config import Config
from kvgroomd.core.decision import Cause, Decision, Result, wrap_ns
from kvgroomd.core.drift import Drift, Listing
from kvgroomd.core.facts import Invalid, Loaded
from kvgroomd.core.groomer import Groomer, Note, Repairs, Rules, Step
from kvgroomd.core.index import NAME, Snapshot
from kvgroomd.daemon import _memory as memory
from kvgroomd.daemon._reader import Beside
from kvgroomd.daemon.apply import apply
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.daemon.read import (
    DETECTING,
    read_many,
    read_snapshot,
    read_text,
    read_texts,
)
from kvgroomd.daemon.scan import scan_temps
from kvgroomd.format.layouts import Reading
from kvgroomd.format.names import SnapshotName, classify, is_snapshot_name

if TYPE_CHECKING:
    from kvgroomd.daemon.trace import Recorder

_LOAD_PART = 16384  # files read, parsed and indexed at a time (bounds the peak memory)
_FORK_AT = 20_000  # new files from which a second process reads half of them


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """A long pass noticed a stop request and returned early, leaving the
    index consistent (every file it holds was read whole)."""


@dataclass
class Totals:
    """Counters for STATUS=, metrics and the end-of-pass log."""

    unlinked: Counter[str] = field(default_factory=Counter)
    freed: Counter[str] = field(default_factory=Counter)
    would: Counter[str] = field(default_factory=Counter)  # dry run: unlinks not done
    would_free: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    events: int = 0
    repairs: int = 0
    failed: int = 0  # unlinks that hit an OS error (permissions, ...)


class FileTexts:
    """The core's text source for a real directory (core/groomer.Texts)."""

    def __init__(self, directory: PinnedDir, tick: Callable[[], None],
                 reading: Reading = DETECTING) -> None:  # fmt: skip
        self.directory = directory
        self.tick = tick
        self.reading = reading  # the engine's layout (format/layouts.py)

    def text(self, snap: Snapshot) -> bytes | None:
        return read_text(self.directory, snap)

    def texts(self, names: npt.NDArray[np.bytes_], lengths: npt.NDArray[np.integer[Any]],
              offsets: npt.NDArray[np.integer[Any]]) -> Iterator[bytes | None]:  # fmt: skip
        return read_texts(self.directory, names, lengths, self.tick, offsets=offsets)

    def heads(self, names: npt.NDArray[np.bytes_]) -> Loaded:
        return _concat(_read_all(self.directory, names, self.tick, self.reading))


def _read_all(directory: PinnedDir, names: npt.NDArray[np.bytes_],
              tick: Callable[[], None], reading: Reading) -> list[Loaded]:  # fmt: skip
    """`read_many` of many names, in parts (the core indexes them part by
    part, so no copy of them all is ever made); from _FORK_AT names a helper
    process reads some meanwhile (_reader.Beside: fork and exec, not a bare
    fork of this threaded process)."""
    cut = len(names) * 11 // 20  # the helper also starts Python and pickles: a little less
    beside = Beside(directory, names[cut:], reading) if len(names) >= _FORK_AT else None
    mine = names[:cut] if beside else names
    try:
        parts = [read_many(directory, mine[i : i + _LOAD_PART], tick=tick, reading=reading)
                 for i in range(0, len(mine), _LOAD_PART)]  # fmt: skip
        if beside:
            loaded = beside.result(tick)
            if loaded is None:  # the helper failed: read its part here
                theirs = names[cut:]
                parts += [read_many(directory, theirs[i : i + _LOAD_PART], tick=tick,
                                    reading=reading)
                          for i in range(0, len(theirs), _LOAD_PART)]  # fmt: skip
            else:
                parts.append(loaded)
    finally:
        if beside is not None:
            beside.cancel()
    return parts


def _concat(parts: list[Loaded]) -> Loaded:
    if not parts:
        return Loaded.empty()
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [len(p.rows) for p in parts])
    return Loaded(
        rows=np.concatenate([p.rows for p in parts]),
        names=np.concatenate([p.names for p in parts]),
        invalid=[b for p in parts for b in p.invalid],
        gone=[g for p in parts for g in p.gone],
        probe_rows=np.concatenate([p.probe_rows + off for p, off in zip(parts, offsets,
                                                                        strict=False)]),
        probe_keys=np.concatenate([p.probe_keys for p in parts]),
    )  # fmt: skip


def _snapshot_names(names: list[str]) -> list[str]:
    """The `<40 hex>.kv` names among `names`, in order (is_snapshot_name, in bulk)."""
    shaped = [n for n in names if len(n) == 43 and n.endswith(".kv")]
    try:
        hexes = "".join([n[:40] for n in shaped])
        if len(bytes.fromhex(hexes)) == 20 * len(shaped) and hexes.isascii():
            return shaped
    except ValueError:
        pass
    return [n for n in shaped if is_snapshot_name(n)]  # some odd name: one by one


class DiskGroomer:
    """One cache directory: the core's facts come from it, its decisions act on it."""

    def __init__(self, config: Config, log: Any,
                 should_stop: Callable[[], bool] = lambda: False,
                 directory: PinnedDir | None = None,
                 trace: Recorder | None = None) -> None:  # fmt: skip
        """`directory`: the pinned cache directory (the daemon's, which it
        re-pins); None pins `config.cache_dir` here (one pass, tests).
        `trace`: the activity trace (daemon/trace.py), fed every note,
        decision and outcome."""
        self.config = config
        if directory is None:
            directory = PinnedDir(config.cache_dir)
            directory.pin()
        self.directory = directory
        self.log = log
        self.core = Groomer(config.rules())
        self.totals = Totals()
        self.should_stop = should_stop
        self.texts = FileTexts(self.directory, self._tick, config.reading)
        self._now = 0.0  # the `now` of the event being handled (a re-read is part of it)
        self.trace = trace
        if trace is not None:
            trace.attach(self.core, self.texts)
        memory.tune()

    @property
    def index(self) -> Any:
        """The core's index (what `ls`, metrics and STATUS= report)."""
        return self.core.index

    @property
    def invalid(self) -> dict[str, Any]:
        """Snapshot-named files that do not parse, by name."""
        return self.core.invalid

    def reconfigure(self, config: Config) -> None:
        """A reloaded config (the cache dir does not change on reload)."""
        self.config = config
        self.core.reconfigure(config.rules())
        self.texts.reading = config.reading
        if self.trace is not None:
            self.trace.reloaded(config)

    # -- events -----------------------------------------------------------------

    def landed(self, name: str, now: float, *, created: bool = False) -> None:
        """A snapshot-named file appeared or was rewritten: read it, let the
        core decide. `created`: only its creation was seen, so it may still be
        being written (a short read is not worth reporting yet)."""
        self._now = now
        kind = classify(name)
        if isinstance(kind, SnapshotName):
            self.run(self._read(kind, now, in_flight=created))

    def gone(self, name: str) -> None:
        """A snapshot-named file disappeared (the engine evicted or consumed it)."""
        self.run(self.core.gone(name))

    def tick(self, now: float) -> None:
        """Time passed: the budget again."""
        self._now = now
        self.run(self.core.tick(now))

    def reconcile(self, now: float, *, startup: bool = False) -> Repairs:
        """Rescan the directory, repair drift, then groom everything on disk."""
        self._now = now
        if self.core.needs_stat:
            listing = list_snapshots(self.directory, self._tick, stat=True)
            d = self.core.drift(listing)
            names = listing.names
        else:  # an empty index: every name is new, no lstat needed
            names = list_snapshots(self.directory, self._tick, stat=False).names
            d = Drift(names, names[:0], ())
        temps = tuple(scan_temps(self.directory)) if self.config.orphan_temps else ()
        # The parts go straight to the core, which frees each once indexed.
        step, repairs = self.core.rescanned(
            d, _read_all(self.directory, d.to_read, self._tick, self.config.reading), self.texts,
            now, temps=temps, quiet=startup, listed=names)  # fmt: skip
        del names
        if startup and self.trace is not None:
            self.trace.present(step.decisions)  # what was there before anything is decided
        self.run(step)
        if not startup:
            self.totals.repairs += repairs.total
        memory.trim()  # a scan frees tens of MiB of buffers and names
        self.log.info(events.RECONCILE_DONE, startup=startup, snapshots=len(self.core.index),
                      dir_bytes=self.core.usage, invalid=len(self.core.invalid),
                      repaired=0 if startup else repairs.total, added=repairs.added,
                      changed=repairs.changed, gone=repairs.gone)  # fmt: skip
        return repairs

    # -- carrying out a step --------------------------------------------------------

    def run(self, step: Step) -> None:
        """Log the step's notes, then apply its decisions one by one."""
        for note in step.notes:
            self._log(note)
        self.execute(step.decisions)

    def execute(self, decisions: list[Decision]) -> None:
        """Hand each decision to the deleter and tell the core what happened.
        Each unlink is whole (compare-and-delete), so stopping between two is
        clean: the rest are settled as not done."""
        for i, d in enumerate(decisions):
            usage = self.core.usage
            if d.cause is Cause.ORPHAN_TEMP:  # temp files are not in the index or budget
                usage += d.seen.size
            try:
                if self.should_stop():
                    raise Stopped
                outcome = apply(self.directory, d, dry_run=self.config.dry_run, usage=usage,
                                log=self.log, context={"budget": self.core.limit()})  # fmt: skip
            except BaseException:  # Stopped, or Unpinned: the rest were never carried out
                self.core.abandon(decisions[i:])
                raise
            if self.trace is not None:
                self.trace.decided(d, outcome.result)
            for note in self.core.settle(d, outcome.result):
                self._log(note)
            if outcome.result is Result.UNLINKED:
                self.totals.unlinked[d.cause] += 1
                self.totals.freed[d.cause] += outcome.freed
            elif outcome.result is Result.WOULD_UNLINK:
                self.totals.would[d.cause] += 1
                self.totals.would_free[d.cause] += outcome.freed
            elif outcome.result is Result.FAILED:
                self.totals.failed += 1
            elif outcome.result in (Result.CHANGED, Result.REFUSED):
                kind = classify(d.name)
                if isinstance(kind, SnapshotName):  # what is there now, the core decides again
                    self.run(self._read(kind, self._now, in_flight=False, budget=False))

    def _read(self, name: SnapshotName, now: float, *, in_flight: bool,
              budget: bool = True) -> Step:  # fmt: skip
        got = read_snapshot(self.directory, name, reading=self.config.reading)
        if got is None:
            return self.core.gone(name.name)
        if isinstance(got, Invalid):
            if in_flight and got.why in ("short", "truncated"):
                return Step()
            return self.core.invalid_file(got)
        return self.core.landed(got, self.texts, now, budget=budget)

    def _log(self, note: Note) -> None:
        if self.trace is not None:
            self.trace.note(note)
        fields = dict(note.fields)
        name = fields.pop("name", None)
        if name is not None:
            fields = {"path": self.directory.path_of(name), **fields}
        if note.event == events.INVALID:
            self.totals.invalid += 1
        getattr(self.log, note.level)(note.event, **fields)

    def _tick(self) -> None:
        if self.should_stop():
            raise Stopped


def list_snapshots(directory: PinnedDir, tick: Callable[[], None], *, stat: bool) -> Listing:
    """Snapshot names in the directory, in inode order (reads then walk
    the inode table in order), with lstat fingerprints unless `stat` is
    False. Names are kept as one NAME array, listed 4096 at a time: no
    hundred thousand str objects alive at once."""
    names, inodes = [], []
    with directory.scandir() as it:
        while chunk := [(e.name, e.inode()) for e in itertools.islice(it, 4096)]:
            tick()
            keep = set(_snapshot_names([n for n, _ in chunk]))
            names.append(np.array([n.encode() for n, _ in chunk if n in keep], dtype=NAME))
            inodes.append(np.array([i for n, i in chunk if n in keep], dtype=np.uint64))
    all_names = np.concatenate(names) if names else np.zeros(0, dtype=NAME)
    order = np.argsort(np.concatenate(inodes) if inodes else np.zeros(0, np.uint64),
                       kind="stable")  # fmt: skip
    all_names = all_names[order]
    n = len(all_names)
    fp = np.zeros((n, 4), dtype=np.int64)
    found = np.ones(n, dtype=bool)
    if stat:
        found[:] = False
        dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=directory.fd)
        try:
            for start in range(0, n, 4096):
                tick()
                for i, b in enumerate(all_names[start : start + 4096].tolist(), start):
                    try:
                        st = os.stat(b.decode(), dir_fd=dfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    found[i] = True
                    fp[i] = (st.st_dev, st.st_ino, st.st_size, wrap_ns(st.st_mtime_ns))
        finally:
            os.close(dfd)
    fp = fp[found]
    return Listing(all_names[found], fp[:, 0].astype(np.uint64), fp[:, 1].astype(np.uint64),
                   fp[:, 2], fp[:, 3])  # fmt: skip




def survey(directory: PinnedDir, rules: Rules, now: float,
           tick: Callable[[], None] = lambda: None, *,
           reading: Reading = DETECTING) -> tuple[Groomer, list[Invalid], FileTexts]:  # fmt: skip
    """Index a directory without acting on it (`ls`, `stats`): the daemon's
    start-up listing and bulk read (as `reading` says: the engine's layout),
    fed to a core that decides nothing. Opens nothing for writing."""
    core = Groomer(replace(rules, supersede=False, budget=None, engine_budget=None,
                           dry_run=True, orphan_temps=False, stale_format=False))  # fmt: skip
    names = list_snapshots(directory, tick, stat=False).names
    parts = _read_all(directory, names, tick, reading)
    invalid = [bad for part in parts for bad in part.invalid]
    texts = FileTexts(directory, tick, reading)
    core.rescanned(Drift(names, names[:0], ()), parts, texts, now, quiet=True, listed=names)
    return core, invalid, texts


def cause_totals(totals: Totals) -> dict[str, Any]:
    """Unlinks and bytes freed by cause (and a dry run's would-be ones), for summaries."""
    return {str(c): {"unlinked": totals.unlinked[c], "freed": totals.freed[c],
                     **({"would_unlink": totals.would[c], "would_free": totals.would_free[c]}
                        if totals.would else {})}
            for c in Cause}  # fmt: skip
