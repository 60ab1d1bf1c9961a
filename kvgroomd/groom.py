"""The groomer: keeps the index in step with the directory and applies policy.

Shell, but a thin one: it reads files (read.py), updates the index, asks the
pure policies (supersede.py, evict.py) for decisions and hands each one to the
only deleter (unlink.py). Used by the daemon for every event and by
`kvgroomd groom --once` for one pass. It owns no clock: callers pass `now`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from kvgroomd import log as events
from kvgroomd import memory
from kvgroomd.cleanup import plan as cleanup_plan
from kvgroomd.config import Config
from kvgroomd.decision import Cause, Decision, Fingerprint
from kvgroomd.evict import Budget, choose
from kvgroomd.index import Change, Drift, Index, Snapshot, decide, snapshot_of
from kvgroomd.names import SnapshotName, classify, is_snapshot_name
from kvgroomd.read import Invalid, fingerprint, read_many, read_snapshot, read_text, read_texts
from kvgroomd.scan import scan_temps
from kvgroomd.scoring import POLICIES
from kvgroomd.supersede import (
    CHAIN_REASONS,
    TRIGGERS,
    Probes,
    candidate_rows,
    judge,
    prefixes_of,
    sweep_pairs,
)
from kvgroomd.index import TAIL_KNOWN
from kvgroomd.prefix import tail_of
from kvgroomd.snapshot import Reason
from kvgroomd.unlink import Result, apply


_FP = ("dev", "ino", "size", "mtime_ns")


@dataclass
class _Scan:
    """A directory listing: snapshot names and (optionally) their lstat."""

    names: list[str] = field(default_factory=list)
    dev: list[int] = field(default_factory=list)
    ino: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    mtime_ns: list[int] = field(default_factory=list)


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


def _shas(cols: npt.NDArray[np.void], rows: npt.NDArray[np.intp]) -> list[bytes]:
    """The 20 SHA-1 bytes of each row (the first 20 bytes of a ROW record)."""
    blob = cols[rows].view(np.uint8).reshape(len(rows), cols.dtype.itemsize)[:, :20].tobytes()
    return [blob[i : i + 20] for i in range(0, len(blob), 20)]


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """A long pass noticed a stop request and returned early, leaving the
    index consistent (every file it holds was read whole)."""


@dataclass
class Totals:
    """Counters for STATUS=, metrics and the end-of-pass log."""

    unlinked: Counter[str] = field(default_factory=Counter)
    freed: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    events: int = 0
    repairs: int = 0
    failed: int = 0  # unlinks that hit an OS error (permissions, ...)


class Groomer:
    """Index + policy + deleter for one cache directory."""

    def __init__(self, config: Config, log: Any,
                 should_stop: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        self.config = config
        self.directory = config.cache_dir
        self.log = log
        self.index = Index()
        self.invalid: dict[str, tuple[tuple[int, int, int] | None, str]] = {}
        # Dry run: files we would have unlinked, by the version judged. They
        # leave the index as if deleted, so a dry run decides what a real run
        # would, and stay out until the engine changes them.
        self.dry_removed: dict[str, Fingerprint] = {}
        self.totals = Totals()
        self.should_stop = should_stop
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
            self.log.info(events.REMOVED, path=str(self.directory / name), sha=old.sha,
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
            d = Drift(tuple(scan.names), (), ())
        else:
            d = self._drift(scan)
        for name in d.gone:
            self.gone(name)
        probes: Probes | None = self._load(d.added, d.changed, quiet=startup)
        loaded_at = self.index.generation
        if self.invalid:
            present = set(scan.names)
            for name in [n for n in self.invalid if n not in present]:
                del self.invalid[name]
        repairs = 0 if startup else len(d.added) + len(d.changed) + len(d.gone)
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
                      repaired=repairs, added=len(d.added), changed=len(d.changed),
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
        proven = self._prove(sweep_pairs(index, probes,
                                         strict_quant=self.config.reject_different_quant))  # fmt: skip
        covered: set[str] = set()
        generation = index.generation
        for i, (name, trigger, olds) in enumerate(proven):
            if i % 64 == 0 and self.should_stop():
                raise Stopped
            if index.generation != generation:  # unlinks earlier in this pass
                if name not in index:
                    continue  # superseded itself earlier in this pass
                olds = [(o, continued) for o, continued in olds if o in index]
            covered.update(o for o, _ in olds)
            new = index.get(name) if trigger else None
            if new is not None:
                self.execute(decide(o, Cause.SUPERSEDED, now, superseded_by=new.sha,
                                    superseded_by_tokens=new.header.tokens)
                             for o in (index.get(o) for o, continued in olds if continued)
                             if o is not None)  # fmt: skip
        flags = np.zeros(len(index), dtype=bool)
        rows = index.rows_of(sorted(covered))
        flags[rows[rows >= 0]] = True
        index.set_covered_rows(flags)
        self._swept = index.generation

    def _prove(self, pairs: list[tuple[int, npt.NDArray[np.intp]]]
               ) -> list[tuple[str, bool, list[tuple[str, bool]]]]:  # fmt: skip
        """Which candidate pairs are true (SHA-1), before anything is unlinked:
        one read and one incremental SHA-1 pass per longer text, against the
        SHA-1s the rows hold. Returns (N, N triggers supersession, [(O, O is
        continued)]) for each N that strictly extends some O, in plan order.
        Plain Python per pair (the lists are short), no Snapshot objects: once
        the directory is groomed, the pass is only about the covered flags."""
        cols = self.index.columns()
        flat = np.concatenate([olds for _, olds in pairs]) if pairs else np.zeros(0, np.intp)
        n_rows = np.asarray([n for n, _ in pairs], dtype=np.intp)
        o_len = cols["text_bytes"][flat].tolist()
        o_tail = np.where(cols["flags"][flat] & TAIL_KNOWN, cols["tail"][flat], -1).tolist()
        o_continued = (cols["reason"][flat] == int(Reason.CONTINUED)).tolist()
        o_sha = _shas(cols, flat)
        n_sha = _shas(cols, n_rows)
        n_trigger = np.isin(cols["reason"][n_rows], [int(r) for r in TRIGGERS]).tolist()
        n_names = self.index.names_at(n_rows)
        o_names = self.index.names_at(flat)
        wanted = list(zip(n_names, cols["text_bytes"][n_rows].tolist(), strict=True))
        proven = []
        end = 0
        for i, text in enumerate(read_texts(self.directory, wanted, self._tick)):
            first = end
            end += len(pairs[i][1])
            if text is None:
                continue  # changed or gone under us; its own event follows
            maybe = [k for k in range(first, end) if o_len[k] <= len(text) and (
                o_tail[k] < 0 or tail_of(text, o_len[k]) == o_tail[k])]  # fmt: skip
            if not maybe:
                continue
            found = prefixes_of(text, n_sha[i], [o_len[k] for k in maybe],
                                [o_sha[k] for k in maybe])  # fmt: skip
            olds = [(o_names[k], o_continued[k])
                    for k, ok in zip(maybe, found or (), strict=False) if ok]  # fmt: skip
            if olds:
                proven.append((n_names[i], n_trigger[i], olds))
        return proven

    def _probes(self) -> Probes:
        """Prefix probes of every indexed chain snapshot, from a fresh read of
        each file's head (a file replaced since it was indexed gives none)."""
        cols = self.index.columns()
        rows = np.flatnonzero(np.isin(cols["reason"], [int(r) for r in CHAIN_REASONS]))
        names = self.index.names_at(rows)
        loaded = read_many(self.directory, names, tick=self._tick)
        at = self.index.rows_of(loaded.names)
        cols = self.index.columns()
        same = (at >= 0)
        same[same] = ((cols["dev"][at[same]] == loaded.rows["dev"][same])
                      & (cols["ino"][at[same]] == loaded.rows["ino"][same]))  # fmt: skip
        keep = same[loaded.probe_rows]
        return at[loaded.probe_rows[keep]].astype(np.int32), loaded.probe_keys[keep]

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
            return
        budget = Budget(self.config.budget, self.config.low_watermark, self.config.protect_new)
        decisions = choose(self.index, budget, now, POLICIES[self.config.policy],
                           dict(self.config.policy_params))  # fmt: skip
        self.execute(decisions, budget=self.config.budget)
        if self.index.total_bytes > self.config.budget and not self.config.dry_run:
            self.log.warning(events.BUDGET_UNREACHABLE, dir_bytes=self.index.total_bytes,
                             budget=self.config.budget,
                             why="the rest is protected (young, agent or unknown reason)")  # fmt: skip

    def execute(self, decisions: Iterable[Decision], **context: Any) -> int:
        """Hand each decision to the deleter; keep the index in step. Bytes freed."""
        freed = 0
        context.setdefault("budget", self.config.budget)
        for d in decisions:
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
        `stat` is False. Names dry-run judged in that very version are left out."""
        with os.scandir(self.directory) as it:
            listing = [(e.name, e.inode()) for e in it]
        if self.should_stop():
            raise Stopped
        names = _snapshot_names([name for name, _ in listing])
        inode = dict(listing) if len(names) != len(listing) else None
        inodes = [inode[n] for n in names] if inode is not None else [i for _, i in listing]
        del listing, inode
        order = np.argsort(np.asarray(inodes, dtype=np.uint64), kind="stable").tolist()
        del inodes
        found = _Scan()
        if not stat:
            found.names = [names[i] for i in order]
            return found
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, k in enumerate(order):
                if i % 1024 == 0 and self.should_stop():
                    raise Stopped
                name = names[k]
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if self.dry_removed and self.dry_removed.get(name) == fingerprint(st):
                    continue
                found.names.append(name)
                found.dev.append(st.st_dev)
                found.ino.append(st.st_ino)
                found.size.append(st.st_size)
                found.mtime_ns.append(st.st_mtime_ns)
        finally:
            os.close(dfd)
        return found

    def _drift(self, scan: _Scan) -> Drift:
        """`index.drift` over a scan, vectorised."""
        rows = self.index.rows_of(scan.names)
        cols = self.index.columns()
        known = rows >= 0
        r = rows[known]
        same = np.zeros(len(rows), dtype=bool)
        same[known] = ((cols["dev"][r] == np.asarray(scan.dev, dtype=np.uint64)[known])
                       & (cols["ino"][r] == np.asarray(scan.ino, dtype=np.uint64)[known])
                       & (cols["size"][r] == np.asarray(scan.size, dtype=np.int64)[known])
                       & (cols["mtime_ns"][r] == np.asarray(scan.mtime_ns, dtype=np.int64)[known]))  # fmt: skip
        present = np.zeros(len(self.index), dtype=bool)
        present[r] = True
        names = scan.names
        return Drift(
            added=tuple(names[i] for i in np.flatnonzero(~known)),
            changed=tuple(names[i] for i in np.flatnonzero(known & ~same)),
            gone=tuple(self.index.name_at(int(i)) for i in np.flatnonzero(~present)),
        )

    def _load(self, added: Sequence[str], changed: Sequence[str], *,
              quiet: bool) -> Probes:  # fmt: skip
        """Read `added` (not indexed) and `changed` (indexed) files into the
        index, as `_refresh` does one by one. Returns the prefix probes of
        the rows it indexed."""
        loaded = read_many(self.directory, [*added, *changed], tick=self._tick)
        for name in loaded.gone:
            self.gone(name)
        for bad in loaded.invalid:
            self._report_invalid(bad)
        rows, names = loaded.rows, loaded.names
        take = np.ones(len(rows), dtype=bool)
        if self.dry_removed:  # dry run: a version already judged stays out
            for j, name in enumerate(names):
                fp = self.dry_removed.get(name)
                if fp is not None and fp == Fingerprint(*(int(rows[f][j]) for f in _FP)):
                    take[j] = False
        new = take & (self.index.rows_of(names) < 0) if len(self.index) else take
        for j in np.flatnonzero(take & ~new):  # known names: put() tells what changed
            self._put(snapshot_of(names[j], rows[j]), quiet=quiet)
        fresh = np.flatnonzero(new)
        base = len(self.index)
        fresh_names = [names[j] for j in fresh]
        if self.invalid:
            for name in fresh_names:
                self.invalid.pop(name, None)
        self.index.put_many(rows[fresh], fresh_names)
        if not quiet:
            for k, name in enumerate(fresh_names):
                self.log.info(events.ADDED, **self._fields(self.index.at(base + k)))
        # Probes of the rows appended: loaded row fresh[k] is index row base + k.
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
        self.log.warning(events.INVALID, path=str(self.directory / bad.name), why=bad.why,
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
            "path": str(self.directory / s.name), "sha": s.sha, "reason": h.reason.label,
            "tokens": h.tokens, "hits": h.hits, "size": s.size, "model_id": h.model_id,
            "quant_bits": h.quant_bits, "ctx_size": h.ctx_size, "abi": h.abi,
            "dir_bytes": self.index.total_bytes,
        }  # fmt: skip


def cause_totals(totals: Totals) -> dict[str, Any]:
    """Unlinks and bytes freed by cause, for summaries."""
    return {str(c): {"unlinked": totals.unlinked[c], "freed": totals.freed[c]} for c in Cause}


