"""The groomer: keeps the index in step with the directory and applies policy.

Shell, but a thin one: it reads files (read.py), updates the index, asks the
pure policies (supersede.py, evict.py) for decisions and hands each one to the
only deleter (unlink.py). Used by the daemon for every event and by
`kvgroomd groom --once` for one pass. It owns no clock: callers pass `now`.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from kvgroomd import log as events
from kvgroomd.config import Config
from kvgroomd.core.cleanup import plan as cleanup_plan
from kvgroomd.core.decision import Cause, Decision, Fingerprint, wrap_ns
from kvgroomd.core.evict import Budget, choose
from kvgroomd.core.index import (
    NAME,
    TAIL_KNOWN,
    Change,
    Drift,
    Index,
    Snapshot,
    decide,
    names_array,
    snapshot_of,
)
from kvgroomd.core.scoring import POLICIES
from kvgroomd.core.supersede import (
    CHAIN_REASONS,
    TRIGGERS,
    Probes,
    candidate_rows,
    judge,
    prefixes_of,
    sweep_pairs_flat,
)
from kvgroomd.daemon import _memory as memory
from kvgroomd.daemon.apply import Result, apply
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.daemon.read import (
    Beside,
    Invalid,
    Loaded,
    fingerprint,
    read_many,
    read_snapshot,
    read_text,
    read_texts,
)
from kvgroomd.daemon.scan import scan_temps
from kvgroomd.format.header import Reason
from kvgroomd.format.names import SnapshotName, classify, is_snapshot_name
from kvgroomd.format.prefix import TAIL_BYTES, tail_of, windows

_FP = ("dev", "ino", "size", "mtime_ns")
_LOAD_PART = 16384  # files read, parsed and indexed at a time (bounds the peak memory)
_FORK_AT = 20_000  # new files from which a second process reads half of them
_MANY = 32  # candidates of one text from which _prove checks their tails with numpy
_NO_TAIL = (1 << 64) - 1  # "tail unknown" in _prove (a real tail of all 0xff is checked anyway)


@dataclass
class _Scan:
    """A directory listing: snapshot names (index.NAME array, in inode order)
    and, when asked for, their lstat fingerprints."""

    names: npt.NDArray[np.bytes_]
    dev: npt.NDArray[np.uint64] | None = None
    ino: npt.NDArray[np.uint64] | None = None
    size: npt.NDArray[np.int64] | None = None
    mtime_ns: npt.NDArray[np.int64] | None = None


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


class Groomer:
    """Index + policy + deleter for one cache directory."""

    def __init__(self, config: Config, log: Any,
                 should_stop: Callable[[], bool] = lambda: False,
                 directory: PinnedDir | None = None) -> None:  # fmt: skip
        """`directory`: the pinned cache directory (the daemon's, which it
        re-pins); None pins `config.cache_dir` here (one pass, tests)."""
        self.config = config
        if directory is None:
            directory = PinnedDir(config.cache_dir)
            directory.pin()
        self.directory = directory
        self.log = log
        self.index = Index()
        self.invalid: dict[str, tuple[tuple[int, int, int] | None, str]] = {}
        # Dry run: files we would have unlinked, by the version judged. They
        # leave the index as if deleted, so a dry run decides what a real run
        # would, and stay out until the engine changes them.
        self.dry_removed: dict[str, Fingerprint] = {}
        self.totals = Totals()
        self.should_stop = should_stop
        self._unreachable: str | None = None  # why usage stays over budget, once logged
        self._swept = -1  # index generation at the end of the last sweep
        memory.tune()

    # -- events -------------------------------------------------------------

    def landed(self, name: str, now: float, *, created: bool = False) -> None:
        """A snapshot-named file appeared or was rewritten: index it and groom.
        `created`: only its creation was seen, so it may still be being written."""
        kind = classify(name)
        if not isinstance(kind, SnapshotName):
            return
        snap = self._refresh(kind, in_flight=created)
        if snap is not None and self.config.supersede:
            self._supersede_by(snap, now)
        self.enforce_budget(now)

    def gone(self, name: str) -> None:
        """A snapshot-named file disappeared (the engine evicted or consumed it)."""
        self.invalid.pop(name, None)
        self.dry_removed.pop(name, None)
        if (old := self.index.pop(name)) is not None:
            self.log.info(events.REMOVED, path=self.directory.path_of(name), sha=old.sha,
                          reason=old.header.reason.label, size=old.size,
                          dir_bytes=self.index.total_bytes)  # fmt: skip

    # -- passes ---------------------------------------------------------------

    def reconcile(self, now: float, *, startup: bool = False) -> None:
        """Rescan the directory, repair drift, then groom everything on disk."""
        # An empty index (start-up) needs no lstat per file: every name is new,
        # and reading it fstat()s it anyway.
        fresh = len(self.index) == 0 and not self.dry_removed
        scan = self._scan(stat=not fresh)
        if fresh:
            d, added = Drift((), (), ()), scan.names
            n_added = len(added)
        else:
            d, added = self._drift(scan)
            n_added = len(d.added)
        for name in d.gone:
            self.gone(name)
        probes: Probes | None = self._load(added, d.changed, quiet=startup)
        loaded_at = self.index.generation
        if not fresh:  # drift is what entered the index: an invalid file read again is not
            n_added = int((self.index.rows_of(added) >= 0).sum())
        if self.invalid:
            listed = {n.decode() for n in scan.names.tolist()}
            for name in [n for n in self.invalid if n not in listed]:
                del self.invalid[name]
        del scan, added
        repairs = 0 if startup else n_added + len(d.changed) + len(d.gone)
        self.totals.repairs += repairs
        self.clean_leaks(now)
        # The probes of a fresh scan name rows: valid while no row has moved.
        if not fresh or self.index.generation != loaded_at:
            probes = None
        # Nothing added, replaced or removed since the last sweep: it would
        # find nothing new (and would re-read every text's head to know).
        if self.config.supersede and (startup or self.index.generation != self._swept):
            self.sweep(now, probes)
        self.enforce_budget(now)
        memory.trim()  # a scan frees tens of MiB of buffers and names
        self.log.info(events.RECONCILE_DONE, startup=startup, snapshots=len(self.index),
                      dir_bytes=self.index.total_bytes, invalid=len(self.invalid),
                      repaired=repairs, added=n_added, changed=len(d.changed),
                      gone=len(d.gone))  # fmt: skip

    def sweep(self, now: float, probes: Probes | None = None) -> None:
        """Apply the supersession rule across everything indexed (out-of-order
        arrivals, files that landed while we were not watching).

        Candidates come from each text's prefix probes (prefix.py); without
        `probes` from the scan that built the index, the heads of the
        indexed texts are read again to get them."""
        if probes is None:
            probes = self._probes()
        index = self.index
        n_rows, bounds, o_rows = sweep_pairs_flat(
            index, probes, strict_quant=self.config.reject_different_quant)
        proven = self._prove(n_rows, bounds, o_rows)
        pairs_n = np.repeat(n_rows, np.diff(bounds))[proven]
        pairs_o = o_rows[proven]
        # Covered flags go on before any unlink: an unlink moves a row with its
        # flag, and a file that loses its longer twin to an unlink is still
        # covered by the longer file that superseded that twin (its pair is
        # proven too: prefixes and compatibility are transitive).
        covered = np.zeros(len(index), dtype=bool)
        covered[pairs_o] = True
        index.set_covered_rows(covered)
        cols = index.columns()
        unlink = (np.isin(cols["reason"][pairs_n], [int(r) for r in TRIGGERS])
                  & (cols["reason"][pairs_o] == int(Reason.CONTINUED)))  # fmt: skip
        if unlink.any():  # longest N first, as proven; names before rows move
            news = index.names_at(pairs_n[unlink])
            olds = index.names_at(pairs_o[unlink])
            for i, (name, group) in enumerate(itertools.groupby(zip(news, olds, strict=True),
                                                                key=lambda p: p[0])):  # fmt: skip
                if i % 64 == 0 and self.should_stop():
                    raise Stopped
                new = index.get(name)
                if new is None:
                    continue  # superseded itself earlier in this pass
                snaps = (index.get(old) for _, old in group)
                self.execute(decide(o, Cause.SUPERSEDED, now, superseded_by=new.sha,
                                    superseded_by_tokens=new.header.tokens)
                             for o in snaps if o is not None)  # fmt: skip
        self._swept = index.generation

    def _prove(self, n_rows: npt.NDArray[np.intp], bounds: npt.NDArray[np.intp],
               o_rows: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:  # fmt: skip
        """Which candidate pairs (N = n_rows[i], O = o_rows[bounds[i]:bounds[i+1]])
        are true, by SHA-1, before anything is unlinked: one read and one
        incremental SHA-1 pass per N text, against the SHA-1s the rows hold.
        A mask over o_rows. Only a few small objects live at a time (a sweep
        over 100,000 files once left ~5 MiB of Python's small-object arenas
        pinned): lists are built per N and names decoded one by one."""
        cols = self.index.columns()
        proven = np.zeros(len(o_rows), dtype=bool)
        o_len = cols["text_bytes"][o_rows]
        o_tail = np.where(cols["flags"][o_rows] & TAIL_KNOWN, cols["tail"][o_rows],
                          np.uint64(_NO_TAIL))  # fmt: skip
        o_sha = cols[o_rows].view(np.uint8).reshape(len(o_rows), cols.dtype.itemsize)[:, :20]
        n_sha = cols[n_rows].view(np.uint8).reshape(len(n_rows), cols.dtype.itemsize)[:, :20]
        texts = read_texts(self.directory, self.index.names_array(n_rows),
                           cols["text_bytes"][n_rows], self._tick)  # fmt: skip
        for i, text in enumerate(texts):
            if text is None:
                continue  # changed or gone under us; its own event follows
            a, b = int(bounds[i]), int(bounds[i + 1])
            if b - a > _MANY:  # texts sharing a long prefix (a big system prompt): numpy
                lengths = o_len[a:b].astype(np.intp)
                ok = lengths <= len(text)
                win, tail = windows(text), o_tail[a:b]
                check = ok & (lengths >= TAIL_BYTES) & (tail != _NO_TAIL)
                if win is not None and check.any():
                    ok[check] = win[lengths[check] - TAIL_BYTES] == tail[check]
                maybe = np.flatnonzero(ok).tolist()
                lengths = lengths.tolist()
            else:
                lengths, tails = o_len[a:b].tolist(), o_tail[a:b].tolist()
                maybe = [k for k in range(b - a) if lengths[k] <= len(text) and (
                    tails[k] == _NO_TAIL or tail_of(text, lengths[k]) == tails[k])]  # fmt: skip
            if not maybe:
                continue
            found = prefixes_of(text, n_sha[i].tobytes(), [lengths[k] for k in maybe],
                                [o_sha[a + k].tobytes() for k in maybe])  # fmt: skip
            if found:
                for k, yes in zip(maybe, found, strict=True):
                    proven[a + k] = yes
        return proven

    def _probes(self) -> Probes:
        """Prefix probes of every indexed chain snapshot, from a fresh read of
        each file's head (a file replaced since it was indexed gives none)."""
        cols = self.index.columns()
        rows = np.flatnonzero(np.isin(cols["reason"], [int(r) for r in CHAIN_REASONS]))
        names = self.index.names_array(rows)
        cut = len(names) * 11 // 20
        beside = Beside(self.directory, names[cut:]) if len(names) >= _FORK_AT else None
        try:
            parts = [read_many(self.directory, names[:cut] if beside else names,
                               tick=self._tick)]  # fmt: skip
            if beside:
                theirs = beside.result()
                if theirs is None:  # the child failed: read its part here
                    theirs = read_many(self.directory, names[cut:], tick=self._tick)
                parts.append(theirs)
        finally:
            if beside is not None:
                beside.cancel()
        out_rows, out_keys = [], []
        cols = self.index.columns()
        for loaded in parts:
            at = self.index.rows_of(loaded.names)
            same = at >= 0
            same[same] = ((cols["dev"][at[same]] == loaded.rows["dev"][same])
                          & (cols["ino"][at[same]] == loaded.rows["ino"][same]))  # fmt: skip
            keep = same[loaded.probe_rows]
            out_rows.append(at[loaded.probe_rows[keep]].astype(np.int32))
            out_keys.append(loaded.probe_keys[keep])
        return np.concatenate(out_rows), np.concatenate(out_keys)

    def clean_leaks(self, now: float) -> None:
        """Opt-in leak cleanup (config `cleanup.*`): crash-left temp files and
        ABI-0 files. Runs at start-up and on every reconcile; see cleanup.py."""
        c = self.config
        if not (c.orphan_temps or c.stale_format):
            return
        temps = scan_temps(self.directory) if c.orphan_temps else []
        if self.dry_removed:  # dry run: judge each temp file once, like snapshots
            present = {t.name for t in temps}
            for name in [n for n in self.dry_removed if ".kv.tmp." in n and n not in present]:
                del self.dry_removed[name]
            temps = [t for t in temps if self.dry_removed.get(t.name) != t.seen]
        decisions = cleanup_plan(temps, self.index, now, orphans=c.orphan_temps,
                                 orphan_age=c.orphan_temp_age, stale=c.stale_format)  # fmt: skip
        self.execute(decisions)

    def enforce_budget(self, now: float) -> None:
        """Evict by policy when usage is over the budget."""
        if self.config.budget is None or self.index.total_bytes <= self.config.budget:
            self._unreachable = None
            return
        budget = Budget(self.config.budget, self.config.low_watermark, self.config.protect_new)
        decisions = choose(self.index, budget, now, POLICIES[self.config.policy],
                           dict(self.config.policy_params))  # fmt: skip
        failed = self.totals.failed
        self.execute(decisions, budget=self.config.budget)
        if self.index.total_bytes <= self.config.budget or self.config.dry_run:
            self._unreachable = None
            return
        why = ("unlinks failed (see snapshot.unlink_failed)" if self.totals.failed > failed
               else "the rest is protected (young, agent or unknown reason)")  # fmt: skip
        # Once per episode: every event re-runs this pass while, say, a burst
        # of young files holds usage up; one line says so, not one per event.
        if why != self._unreachable:
            self.log.warning(events.BUDGET_UNREACHABLE, dir_bytes=self.index.total_bytes,
                             budget=self.config.budget, why=why)  # fmt: skip
        self._unreachable = why

    def execute(self, decisions: Iterable[Decision], **context: Any) -> int:
        """Hand each decision to the deleter; keep the index in step. Bytes freed."""
        freed = 0
        context.setdefault("budget", self.config.budget)
        for d in decisions:
            # Each unlink is whole (compare-and-delete), so stopping between
            # two is clean; a budget cut can mean thousands of them.
            if self.should_stop():
                raise Stopped
            usage = self.index.total_bytes
            if d.cause is Cause.ORPHAN_TEMP:  # temp files are not in the index or budget
                usage += d.seen.size
            outcome = apply(self.directory, d, dry_run=self.config.dry_run, usage=usage,
                            log=self.log, context=context)  # fmt: skip
            if outcome.result is Result.UNLINKED:
                self.index.pop(d.name)
                self.totals.unlinked[d.cause] += 1
                self.totals.freed[d.cause] += outcome.freed
            elif outcome.result is Result.WOULD_UNLINK:
                self.index.pop(d.name)
                self.dry_removed[d.name] = d.seen
                self.totals.would[d.cause] += 1
                self.totals.would_free[d.cause] += outcome.freed
            elif outcome.result is Result.GONE:
                self.index.pop(d.name)
            elif outcome.result is Result.CHANGED and d.name.endswith(".kv"):
                self._refresh(SnapshotName(d.name, d.name[:40].lower()))
                self._swept = -1  # judge it again at the next sweep
            elif outcome.result is Result.FAILED:
                self.totals.failed += 1
                self._swept = -1  # and try again at the next sweep
            freed += outcome.freed
        return freed

    # -- internals ------------------------------------------------------------

    def _tick(self) -> None:
        if self.should_stop():
            raise Stopped

    def _scan(self, *, stat: bool = True) -> _Scan:
        """Snapshot names in the directory, in inode order (reads then walk the
        inode table in order), with lstat fingerprints (regular or not) unless
        `stat` is False. Names dry-run judged in that very version are left
        out. Names are kept as one NAME array, listed 4096 at a time: no
        hundred thousand str objects alive at once."""
        names, inodes = [], []
        with self.directory.scandir() as it:
            while chunk := [(e.name, e.inode()) for e in itertools.islice(it, 4096)]:
                if self.should_stop():
                    raise Stopped
                keep = set(_snapshot_names([n for n, _ in chunk]))
                names.append(np.array([n.encode() for n, _ in chunk if n in keep], dtype=NAME))
                inodes.append(np.array([i for n, i in chunk if n in keep], dtype=np.uint64))
        all_names = np.concatenate(names) if names else np.zeros(0, dtype=NAME)
        order = np.argsort(np.concatenate(inodes) if inodes else np.zeros(0, np.uint64),
                           kind="stable")  # fmt: skip
        all_names = all_names[order]
        if not stat:
            return _Scan(all_names)
        n = len(all_names)
        fp = np.zeros((n, 4), dtype=np.int64)
        found = np.zeros(n, dtype=bool)
        dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.directory.fd)
        try:
            for start in range(0, n, 4096):
                if self.should_stop():
                    raise Stopped
                for i, b in enumerate(all_names[start : start + 4096].tolist(), start):
                    name = b.decode()
                    try:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if self.dry_removed and self.dry_removed.get(name) == fingerprint(st):
                        continue
                    found[i] = True
                    fp[i] = (st.st_dev, st.st_ino, st.st_size, wrap_ns(st.st_mtime_ns))
        finally:
            os.close(dfd)
        fp = fp[found]
        return _Scan(all_names[found], fp[:, 0].astype(np.uint64), fp[:, 1].astype(np.uint64),
                     fp[:, 2], fp[:, 3])  # fmt: skip

    def _drift(self, scan: _Scan) -> tuple[Drift, npt.NDArray[np.bytes_]]:
        """`index.drift` over a scan, vectorised; also the added names as an array."""
        assert scan.dev is not None and scan.ino is not None
        assert scan.size is not None and scan.mtime_ns is not None
        rows = self.index.rows_of(scan.names)
        cols = self.index.columns()
        known = rows >= 0
        r = rows[known]
        same = np.zeros(len(rows), dtype=bool)
        same[known] = ((cols["dev"][r] == scan.dev[known]) & (cols["ino"][r] == scan.ino[known])
                       & (cols["size"][r] == scan.size[known])
                       & (cols["mtime_ns"][r] == scan.mtime_ns[known]))  # fmt: skip
        present = np.zeros(len(self.index), dtype=bool)
        present[r] = True
        added = scan.names[~known]
        return Drift(
            added=tuple(n.decode() for n in added.tolist()),
            changed=tuple(n.decode() for n in scan.names[known & ~same].tolist()),
            gone=tuple(self.index.name_at(int(i)) for i in np.flatnonzero(~present)),
        ), added

    def _load(self, added: npt.NDArray[np.bytes_], changed: Sequence[str], *,
              quiet: bool) -> Probes:  # fmt: skip
        """Read `added` (not indexed; a NAME array) and `changed` (indexed)
        files into the index, as `_refresh` does one by one. Returns the
        prefix probes of the rows it indexed."""
        names = np.concatenate((added, names_array(changed))) if changed else added
        # Many new files (a start-up): a child process reads the second half
        # meanwhile (read.Beside); this process indexes what it hands back.
        cut = len(names) * 11 // 20  # the child also pickles: it takes a little less
        beside = Beside(self.directory, names[cut:]) if (
            len(names) >= _FORK_AT and not changed) else None  # fmt: skip
        mine = names[:cut] if beside else names
        try:
            parts = [self._index_loaded(read_many(self.directory, mine[i : i + _LOAD_PART],
                                                  tick=self._tick), quiet=quiet)
                     for i in range(0, len(mine), _LOAD_PART)]  # fmt: skip
            if beside:
                theirs = names[cut:]
                loaded = beside.result()
                if loaded is None:  # the child failed: read its half here
                    parts += [self._index_loaded(read_many(self.directory,
                                                           theirs[i : i + _LOAD_PART],
                                                           tick=self._tick), quiet=quiet)
                              for i in range(0, len(theirs), _LOAD_PART)]  # fmt: skip
                else:
                    parts.append(self._index_loaded(loaded, quiet=quiet))
        finally:
            if beside is not None:
                beside.cancel()
        if not parts:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.uint32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _index_loaded(self, loaded: Loaded, *, quiet: bool) -> Probes:
        """Put what read_many found into the index, as `_refresh` does."""
        for name in loaded.gone:
            self.gone(name)
        for bad in loaded.invalid:
            self._report_invalid(bad)
        rows, names = loaded.rows, loaded.names
        take = np.ones(len(rows), dtype=bool)
        if self.dry_removed:  # dry run: a version already judged stays out
            for j, b in enumerate(names.tolist()):
                fp = self.dry_removed.get(b.decode())
                if fp is not None and fp == Fingerprint(*(int(rows[f][j]) for f in _FP)):
                    take[j] = False
        new = take & (self.index.rows_of(names) < 0) if len(self.index) else take
        for j in np.flatnonzero(take & ~new).tolist():  # known names: put() tells what changed
            self._put(snapshot_of(names[j].decode(), rows[j]), quiet=quiet)
        fresh = np.flatnonzero(new)
        base = len(self.index)
        if self.invalid:
            for b in names[fresh].tolist():
                self.invalid.pop(b.decode(), None)
        self.index.put_many(rows[fresh], names[fresh])
        if not quiet:
            for k in range(len(fresh)):
                self.log.info(events.ADDED, **self._fields(self.index.at(base + k)))
        # Probes of the rows appended: loaded row fresh[k] is index row base + k.
        if len(fresh) == len(rows):
            return (base + loaded.probe_rows).astype(np.int32), loaded.probe_keys
        where = np.full(len(rows), -1, dtype=np.intp)
        where[fresh] = base + np.arange(len(fresh))
        at = where[loaded.probe_rows]
        keep = at >= 0
        return at[keep].astype(np.int32), loaded.probe_keys[keep]

    def _refresh(self, name: SnapshotName, *, quiet: bool = False,
                 in_flight: bool = False) -> Snapshot | None:  # fmt: skip
        """Re-read one file into the index. Returns it when it is newly indexed
        (added or replaced by another inode), which is what triggers supersession.
        `in_flight`: a file still being written is not reported as invalid."""
        got = read_snapshot(self.directory, name)
        if isinstance(got, Snapshot) and self.dry_removed.get(name.name) == got.seen:
            return None  # dry run: already judged, treat as gone
        if got is None:
            self.gone(name.name)
            return None
        if isinstance(got, Invalid):
            if not (in_flight and got.why in ("short", "truncated")):
                self._report_invalid(got)
            return None
        self.invalid.pop(name.name, None)
        change = self._put(got, quiet=quiet)
        return got if change in (Change.ADDED, Change.REPLACED) else None

    def _put(self, got: Snapshot, *, quiet: bool) -> Change:
        change = self.index.put(got)
        if change is Change.ADDED and not quiet:
            self.log.info(events.ADDED, **self._fields(got))
        elif change is Change.REPLACED:
            self.log.info(events.REPLACED, **self._fields(got))
        elif change is Change.UPDATED:
            self.log.debug(events.UPDATED, **self._fields(got))
        return change

    def _report_invalid(self, bad: Invalid) -> None:
        """Log an unusable file once per version of it; drop it from the index."""
        self.index.pop(bad.name)  # a snapshot damaged in place is no longer counted
        # Once per version: an in-place touch of a bad file is not news.
        version = (bad.seen.dev, bad.seen.ino, bad.seen.size) if bad.seen else None
        if self.invalid.get(bad.name) == (version, bad.why):
            return
        self.invalid[bad.name] = (version, bad.why)
        self.totals.invalid += 1
        self.log.warning(events.INVALID, path=self.directory.path_of(bad.name), why=bad.why,
                         detail=bad.detail,
                         size=bad.seen.size if bad.seen else None)  # fmt: skip

    def _supersede_by(self, new: Snapshot, now: float) -> tuple[str, ...]:
        """Check `new` against its candidates; unlink what it supersedes.
        Returns the names its text covers (strictly extends)."""
        if new.header.reason not in CHAIN_REASONS:
            return ()
        text = read_text(self.directory, new)
        if text is None:
            return ()  # changed or gone under us; its own event follows
        # Candidates by prefix keys, conditions and last bytes: rarely more
        # than the true prefixes, whatever the index holds.
        rows = candidate_rows(self.index, new, strict_quant=self.config.reject_different_quant,
                              text=text)  # fmt: skip
        candidates = [self.index.at(int(r)) for r in rows]
        return self._supersede_with(new, candidates, now, text=text)

    def _supersede_with(self, new: Snapshot, candidates: list[Snapshot], now: float, *,
                        text: bytes | None = None) -> tuple[str, ...]:  # fmt: skip
        if not candidates:
            return ()
        if text is None:
            text = read_text(self.directory, new)
        if text is None:
            return ()  # changed or gone under us; its own event follows
        verdict = judge(new, text, candidates, now=now)
        self.index.set_covered(dict.fromkeys(verdict.covered, True))
        if verdict.superseded and new.header.reason in TRIGGERS:
            self.execute(verdict.superseded)
        return verdict.covered

    def _fields(self, s: Snapshot) -> dict[str, Any]:
        h = s.header
        return {
            "path": self.directory.path_of(s.name), "sha": s.sha, "reason": h.reason.label,
            "tokens": h.tokens, "hits": h.hits, "size": s.size, "model_id": h.model_id,
            "quant_bits": h.quant_bits, "ctx_size": h.ctx_size, "abi": h.abi,
            "dir_bytes": self.index.total_bytes,
        }  # fmt: skip


def cause_totals(totals: Totals) -> dict[str, Any]:
    """Unlinks and bytes freed by cause (and a dry run's would-be ones), for summaries."""
    return {str(c): {"unlinked": totals.unlinked[c], "freed": totals.freed[c],
                     **({"would_unlink": totals.would[c], "would_free": totals.would_free[c]}
                        if totals.would else {})}
            for c in Cause}  # fmt: skip


