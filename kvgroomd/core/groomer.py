"""The decision core: what kvgroomd knows about one cache directory, and what it decides.

Pure: facts in, decisions out, no I/O and no clock. The daemon
(daemon/groom.py), `kvgroomd groom`, `ls`/`stats` and the simulator all drive
this one class, so what the simulator predicts is what the daemon does.

    event from the shell                  what the core does
    landed(snap, texts, now)              index it; a new file supersedes by its text; budget
    invalid(bad)                          forget it: a file the engine ignores is not counted
    gone(name)                            forget it (the engine evicted or consumed it)
    drift(listing) -> Drift               what a full listing says changed (the shell reads it)
    rescanned(drift, loaded, texts, now)  repair, sweep supersession across everything, budget
    tick(now)                             budget again (files age out of protection)
    settle(decision, result)              what the deleter did with one decision

Each event returns a `Step`: decisions to apply in order, and notes for the
log. A decision leaves the index at once (it is *pending*), so the next
choice already sees the room it frees; `settle` confirms it, puts the file
back (the deleter failed) or forgets it (the file changed: the shell reads it
again and reports a landing). In a dry run a decided file stays out of the
index for as long as it is the very version judged, so a dry run decides
what a real run would.

Texts come from a `Texts` source the shell provides (files, or the
simulator's memory): supersession (core/chains.py) is proven by SHA-1 over
the longer text.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from kvgroomd import events
from kvgroomd.core._ledger import Ledger
from kvgroomd.core.branches import Branches
from kvgroomd.core.chains import Chains, joined
from kvgroomd.core.cleanup import TempFile
from kvgroomd.core.cleanup import plan as cleanup_plan
from kvgroomd.core.decision import Decision, Fingerprint, Result
from kvgroomd.core.drift import Drift, Listing, drift
from kvgroomd.core.facts import Invalid, Loaded
from kvgroomd.core.index import Change, Index, Snapshot, same_file, snapshot_of
from kvgroomd.core.limits import Limits
from kvgroomd.core.scoring import POLICIES, Clock
from kvgroomd.core.steps import Note, Repairs, Rules, Step, Texts
from kvgroomd.core.supersede import CHAIN_REASONS, Probes
from kvgroomd.format.header import Reason

__all__ = ["Groomer", "Note", "Repairs", "Rules", "Step", "Texts"]

Rows = npt.NDArray[np.intp]
HEADROOM_SEED = 16  # the newest files of a scan stand in for the stores not seen
SKEW_S = 60  # a header time this far ahead of ours is noted (once)


class Groomer:
    """The index of one cache directory and the policy applied to it."""

    def __init__(self, rules: Rules) -> None:
        if rules.policy not in POLICIES:
            raise ValueError(f"unknown policy {rules.policy!r} (known: {', '.join(POLICIES)})")
        self.rules = rules
        self.index = Index()
        # The cache's own clock: bytes landed so far. Policies measure a
        # file's idleness in it, so the pace of the traffic does not matter.
        self.activity = 0
        # The limit, the room kept for the engine's next store, the files
        # left to the engine (core/limits.py).
        self.limits = Limits(rules.cold_max_tokens)
        self.headroom = self.limits.headroom
        self.deferred = self.limits.deferred
        self.invalid: dict[str, tuple[tuple[int, int, int] | None, str]] = {}
        self.ledger = Ledger()  # decisions in flight; a dry run's judged versions
        # Activity stamps (act, seen_at) of the files a dry run held: one that
        # comes back keeps its place on the cache's clock instead of looking fresh.
        self._held_stamps: dict[str, tuple[int, int]] = {}
        self.chains = Chains(self.index)  # supersession: landings and sweeps
        # Whether saves like each one were used again (core/branches.py).
        self.branches = Branches(self.index)
        self._skewed = False  # a header time ahead of ours was noted

    # -- what the shell asks ---------------------------------------------------

    @property
    def usage(self) -> int:
        """Bytes on disk as the core believes: indexed plus decided, not yet settled."""
        return self.index.total_bytes + self.ledger.pending_bytes

    def limit(self) -> int | None:
        """The usage budget eviction keeps below (core/limits.py)."""
        return self.limits.limit(self.index, self.rules)

    def clock(self, now: float) -> Clock:
        """The policy's view of time."""
        return Clock(now, self.activity)

    @property
    def held(self) -> dict[str, Fingerprint]:
        """Dry run: the files judged (would be unlinked), by the version judged."""
        return dict(self.ledger.held)

    @property
    def needs_stat(self) -> bool:
        """Whether a listing must carry fingerprints. With nothing indexed or
        held every listed name is new, and reading a file fstat()s it anyway."""
        return bool(len(self.index) or self.ledger)

    def reconfigure(self, rules: Rules) -> None:
        """New rules (a reload). Files a dry run held out come back at the next
        rescan once the dry run is over (they were never deleted)."""
        if rules.policy not in POLICIES:
            raise ValueError(f"unknown policy {rules.policy!r} (known: {', '.join(POLICIES)})")
        self.limits.reconfigure(rules)
        if self.rules.dry_run and not rules.dry_run:
            self.ledger.held.clear()
        self.rules = rules

    # -- events ------------------------------------------------------------------

    def landed(self, snap: Snapshot, texts: Texts, now: float, *, budget: bool = True) -> Step:
        """`snap` appeared, was replaced or was rewritten in place. `budget`:
        False when the shell reads a file again after the deleter found it
        changed (the budget is looked at again with the next event, not in a
        loop over a file that keeps changing)."""
        step = Step()
        if self.ledger.judged(snap.name, snap.seen):
            return step  # dry run: this very version was judged already
        self.ledger.held.pop(snap.name, None)
        self.invalid.pop(snap.name, None)
        self.deferred.changed(snap.name)  # a new version, or a hit: judged afresh
        change, snap = self._put(snap, now, step)
        if change in (Change.ADDED, Change.REPLACED):
            self.headroom.landed(snap.size, snap.head, snap.header.tokens)
            step += self._supersede_by(snap, texts, now)
        if budget:
            step += self._budget(now)
        return step

    def invalid_file(self, bad: Invalid) -> Step:
        """A snapshot-named file the engine would not load: never counted,
        never decided on; noted once per version of it."""
        step = Step()
        self.index.pop(bad.name)  # a snapshot damaged in place no longer counts
        self.branches.forget(bad.name)
        self.ledger.held.pop(bad.name, None)
        version = (bad.seen.dev, bad.seen.ino, bad.seen.size) if bad.seen else None
        if self.invalid.get(bad.name) != (version, bad.why):
            self.invalid[bad.name] = (version, bad.why)
            size = bad.seen.size if bad.seen else None
            if bad.why == "other_layout":  # another engine's snapshot: counted apart, left alone
                step.notes.append(Note(events.OTHER_LAYOUT, "info", {
                    "name": bad.name, "layout": bad.layout, "detail": bad.detail,
                    "size": size}))  # fmt: skip
                return step
            step.notes.append(Note(events.INVALID, "warning", {
                "name": bad.name, "why": bad.why, "detail": bad.detail,
                "size": size}))  # fmt: skip
        return step

    def gone(self, name: str) -> Step:
        """`name` left the directory, not by our decision (engine eviction or consume)."""
        step = Step()
        self.invalid.pop(name, None)
        self.ledger.held.pop(name, None)
        agreed = self.deferred.gone(name)
        if (old := self.index.pop(name)) is not None:
            self.branches.left(old, by_us=False, consume_tokens=self.rules.cold_max_tokens)
            if not agreed:  # the engine evicted it for want of room (or consumed it)
                rung = old.head if old.header.reason is Reason.CONTINUED else None
                self.headroom.gone(old.size, old.header.tokens, rung_head=rung)
            step.notes.append(Note(events.REMOVED, "info", {
                "name": name, "sha": old.sha, "reason": old.header.reason.label,
                "tokens": old.header.tokens, "text_bytes": old.header.text_bytes,
                "size": old.size,
                "dir_bytes": self.usage}))  # fmt: skip
        return step

    def tick(self, now: float) -> Step:
        """Time passed: files may have aged out of protection."""
        return self._budget(now)

    def drift(self, listing: Listing) -> Drift:
        """How a full listing differs from the index. Versions a dry run
        judged count as absent while unchanged."""
        return drift(self.index, self.ledger.held_in(listing))

    def rescanned(
        self, d: Drift, loaded: Loaded | list[Loaded], texts: Texts, now: float, *,
        temps: tuple[TempFile, ...] = (), quiet: bool = False,
        listed: npt.NDArray[np.bytes_] | None = None,
    ) -> tuple[Step, Repairs]:  # fmt: skip
        """Repair what a listing found (`d`; `loaded` is what was read of its
        added and changed names, in one or several parts, which the core
        consumes), then apply every rule across the directory: leak cleanup,
        a supersession sweep, the budget. `quiet`: no note per file added (a
        start-up scan). `listed`: every snapshot name listed, to forget
        invalid files that are gone."""
        step = Step()
        fresh = len(self.index) == 0
        for name in d.gone:
            step += self.gone(name)
        parts = [loaded] if isinstance(loaded, Loaded) else loaded
        del loaded
        base, found = len(self.index), []
        while parts:  # part by part: each one's buffers go before the next is indexed
            part = parts.pop(0)
            for name in part.gone:
                step += self.gone(name)
            for bad in part.invalid:
                step += self.invalid_file(bad)
            found.append(self._index_loaded(part, now, step=step))
            del part
        self._stamp_new(base, now, quiet=quiet, step=step)
        probes = joined(found)
        valid_at = self.index.generation
        if listed is not None and self.invalid:
            names = {n.decode() for n in listed.tolist()}
            for name in [n for n in self.invalid if n not in names]:
                del self.invalid[name]
        added = int((self.index.rows_of(d.added) >= 0).sum()) if len(d.added) else 0
        repairs = Repairs(added, len(d.changed), len(d.gone))
        step.decisions += self._hold(cleanup_plan(
            temps, self.index, now, orphans=self.rules.orphan_temps,
            orphan_age=self.rules.orphan_temp_age, stale=self.rules.stale_format))  # fmt: skip
        # Nothing added, replaced or removed since the last sweep: it would
        # find nothing new (and would read every text's head to know).
        if (self.rules.supersede or self.rules.prefixes) and self.chains.due:
            # The probes of what was just read name rows: complete when the
            # index held nothing else, and valid while no row has moved.
            complete = fresh and self.index.generation == valid_at
            step += self.sweep(texts, now, probes if complete else None)
        step += self._budget(now)
        return step, repairs

    def sweep(self, texts: Texts, now: float,
              probes: Probes | None = None) -> Step:  # fmt: skip
        """Apply the supersession rule across everything indexed (core/chains.py)."""
        decisions, notes = self.chains.sweep(
            texts, now, strict_quant=self.rules.strict_quant, supersede=self.rules.supersede,
            notes=self.rules.prefixes, probes=probes)  # fmt: skip
        return Step(self._hold(decisions), notes)

    def prefix_pairs(self, texts: Texts,
                     probes: Probes | None = None,
                     ) -> tuple[Rows, Rows]:  # fmt: skip
        """Every proven (N row, O row) pair of the index (core/chains.py):
        what a sweep acts on, and what `ls` shows as chains."""
        return self.chains.pairs(texts, strict_quant=self.rules.strict_quant, probes=probes)

    def settle(self, d: Decision, result: Result) -> list[Note]:
        """What the deleter did with `d`; notes to log. After CHANGED or
        REFUSED the shell reads the file again and reports what it finds."""
        snap = self.ledger.release(d.name)
        if result in (Result.UNLINKED, Result.GONE, Result.WOULD_UNLINK):
            self.index.pop(d.name)  # already out if the core decided it; a no-op then
            self.deferred.gone(d.name)  # forgotten: names of files long gone pile up
        if result in (Result.UNLINKED, Result.GONE) and snap is not None:
            self.branches.left(snap, by_us=result is Result.UNLINKED,
                               consume_tokens=self.rules.cold_max_tokens)  # fmt: skip
        if result is Result.WOULD_UNLINK:
            self.ledger.held[d.name] = d.seen
            if snap is not None:
                self._held_stamps[d.name] = (snap.act, snap.seen_at)
        elif result in (Result.CHANGED, Result.REFUSED):
            self.chains.again()  # judge it again at the next sweep
        elif result is Result.FAILED:
            self.limits.failed += 1
            self.chains.again()
            if snap is not None:
                self.index.put(snap)  # still there: counted, and tried again later
            return self.limits.unreachable(self.index, self.rules)
        return []

    def abandon(self, decisions: list[Decision]) -> None:
        """Decisions that were never carried out (the pass stopped): their
        files are still there, counted as before."""
        for d in decisions:
            snap = self.ledger.release(d.name)
            if snap is not None:
                self.index.put(snap)

    # -- internals ---------------------------------------------------------------

    def _put(self, snap: Snapshot, now: float, step: Step) -> tuple[Change, Snapshot]:
        """Index one snapshot with its activity stamp; note what changed."""
        index = self.index
        row = index.row_of(snap.name)
        seen_at = int(now)
        cols = index.columns()
        if row is None or not same_file(cols[row], snap):
            self.activity += snap.size  # a store: the cache's clock moves
            act = self.activity
        else:
            old = cols[row]
            seen_at = int(old["seen_at"])
            # A hit rewrites hits in place: a use. Anything else keeps the stamp.
            hit = snap.header.hits > old["hits"]
            act = self.activity if hit else int(old["act"])
            if hit:
                self.branches.hit(snap.name)
        snap = replace(snap, act=act, seen_at=seen_at)
        change = index.put(snap)
        self._note_skew(snap.header.created_at, now, step)
        if change is Change.ADDED or change is Change.REPLACED:
            self.branches.new_version(snap.name)
            step.notes.append(Note(events.ADDED if change is Change.ADDED else events.REPLACED,
                                   "info", self._fields(snap)))  # fmt: skip
        elif change is Change.UPDATED:
            step.notes.append(Note(events.UPDATED, "debug", self._fields(snap)))
        return change, snap

    def _note_skew(self, created_at: int, now: float, step: Step) -> None:
        if created_at > now + SKEW_S and not self._skewed:
            self._skewed = True
            step.notes.append(Note(events.CLOCK_SKEW, "warning", {
                "created_at": created_at, "now": int(now),
                "action": "its age counts from when kvgroomd first saw it"}))  # fmt: skip

    def _fields(self, s: Snapshot) -> dict[str, Any]:
        h = s.header
        return {"name": s.name, "sha": s.sha, "reason": h.reason.label, "tokens": h.tokens,
                "hits": h.hits, "size": s.size, "model_id": h.model_id,
                "quant_bits": h.quant_bits, "ctx_size": h.ctx_size, "abi": h.abi,
                "text_bytes": h.text_bytes, "created_at": h.created_at,
                "last_used": h.last_used, "dir_bytes": self.usage}  # fmt: skip

    def _index_loaded(self, loaded: Loaded, now: float, *, step: Step) -> Probes:
        """Put what a bulk read found into the index (known names one by one,
        new ones appended). Returns the prefix probes of the rows appended
        (index rows, keys). `loaded`'s arrays are the core's to reuse."""
        rows, names = loaded.rows, loaded.names
        take = self.ledger.not_held(rows, names)  # dry run: a judged version stays out
        new = take & (self.index.rows_of(names) < 0) if len(self.index) else take
        for j in np.flatnonzero(take & ~new).tolist():  # known names: one by one
            self._put(snapshot_of(names[j].decode(), rows[j]), now, step)
        fresh = np.flatnonzero(new)
        if self.invalid:
            for b in names[fresh].tolist():
                self.invalid.pop(b.decode(), None)
        base = len(self.index)
        everything = len(fresh) == len(rows)
        self.index.put_many(rows if everything else rows[fresh], names[fresh])
        if everything:  # all of them (a start-up): no gather over the probes
            loaded.probe_rows += base
            return loaded.probe_rows, loaded.probe_keys
        where = np.full(len(rows), -1, dtype=np.intp)
        where[fresh] = base + np.arange(len(fresh))
        at = where[loaded.probe_rows]
        keep = at >= 0
        return at[keep], loaded.probe_keys[keep]

    def _stamp_new(self, base: int, now: float, *, quiet: bool, step: Step) -> None:
        """Activity stamps of the rows appended from `base` on, in the order
        the files were last used, as if they had landed so: the activity clock
        of a directory kvgroomd did not watch. Files a dry run held out come
        back where they were."""
        rows = np.arange(base, len(self.index))
        if not len(rows):
            return
        added = self.index.columns()[base:]
        last = np.where(added["last_used"] > 0, added["last_used"], added["created_at"])
        order = np.lexsort((added["created_at"], last))
        stamps = np.empty(len(added), dtype=np.uint64)
        stamps[order] = self.activity + np.cumsum(added["size"][order].astype(np.int64))
        self.activity += int(added["size"].sum())
        self.index.set_column("act", rows, stamps)
        self.index.set_column("seen_at", rows, int(now))
        if self._held_stamps:
            for j, name in enumerate(self.index.names_at(rows)):
                kept = self._held_stamps.pop(name, None)
                if kept is not None:
                    self.index.set_column("act", rows[j : j + 1], kept[0])
                    self.index.set_column("seen_at", rows[j : j + 1], kept[1])
        added = self.index.columns()[base:]
        self.headroom.seed(added["size"][order][-HEADROOM_SEED:].tolist())
        for created in added["created_at"][added["created_at"] > now + SKEW_S][:1].tolist():
            self._note_skew(created, now, step)
        if not quiet:
            for r in rows.tolist():
                step.notes.append(Note(events.ADDED, "info", self._fields(self.index.at(r))))

    def _supersede_by(self, new: Snapshot, texts: Texts, now: float) -> Step:
        """What `new`'s text supersedes (core/chains.py), its text read only
        when it can extend anything."""
        rules = self.rules
        if not (rules.supersede or rules.prefixes) or new.header.reason not in CHAIN_REASONS:
            return Step()
        text = texts.text(new)
        if text is None:
            return Step()  # changed or gone under us; its own event follows
        decisions, notes, extends = self.chains.landing(
            new, text, now, strict_quant=rules.strict_quant, supersede=rules.supersede,
            notes=rules.prefixes)  # fmt: skip
        self.branches.landing(new, text, extends)
        return Step(self._hold(decisions), notes)

    def _hold(self, decisions: list[Decision]) -> list[Decision]:
        return self.ledger.hold(self.index, decisions)

    def _budget(self, now: float) -> Step:
        """Evict by policy while usage is over the limit."""
        choice = self.limits.choose(self.index, self.rules, self.clock(now))
        if choice is None:
            return Step()
        step = Step(self._hold(choice.decisions))
        step.notes += self.limits.unreachable(self.index, self.rules, choice.unmanaged_bytes)
        return step
