"""The decision core (core/groomer.py), file-free: events in, decisions and notes out."""

from __future__ import annotations

import dataclasses

import numpy as np

from kvgroomd import events
from kvgroomd.core.decision import Cause, Result
from kvgroomd.core.drift import Listing
from kvgroomd.core.evict import young
from kvgroomd.core.facts import Invalid
from kvgroomd.core.groomer import Groomer, Rules, Step
from kvgroomd.core.index import Snapshot
from kvgroomd.format.header import Reason
from kvgroomd.sim.groom import SimTexts, snapshot_of
from tests.unit.builders import DAY, T0, MemDisk, chat_text, indexed, settle_all, snapshot

C = chat_text(30_000)
OLD = T0 - DAY  # the builders' default created_at: long out of protect_new


def chain(*lengths: int, reason: Reason = Reason.CONTINUED) -> list[Snapshot]:
    return [snapshot(C[:n], reason=reason) for n in lengths]


def disk_of(snaps: list[Snapshot]) -> MemDisk:
    return MemDisk(snaps, {s.name: C[: s.header.text_bytes] for s in snaps})


def land(core: Groomer, disk: MemDisk, s: Snapshot, now: float = T0):
    """`s` is written to `disk` and lands in `core`; the step."""
    disk.index.put(s)
    disk.texts[s.name] = C[: s.header.text_bytes]
    return core.landed(snapshot_of(disk, s.name), SimTexts(disk), now)  # type: ignore[arg-type]


class TestLanding:
    def test_a_longer_continued_supersedes_and_the_decision_is_pending(self) -> None:
        """A landing decides the shorter rung at once; it leaves the index,
        yet usage counts it until the deleter settles it."""
        short, long = chain(1000, 2000)
        disk = disk_of([short])
        core = Groomer(Rules())
        indexed(core, disk)
        step = land(core, disk, long)
        assert [(d.name, d.cause) for d in step.decisions] == [(short.name, Cause.SUPERSEDED)]
        assert short.name not in core.index
        assert core.usage == short.size + long.size
        core.settle(step.decisions[0], Result.UNLINKED)
        assert core.usage == long.size

    def test_notes_say_what_was_added_replaced_and_removed(self) -> None:
        """Every change to the index is one note, with its file name."""
        (s,) = chain(1000)
        disk = disk_of([])
        core = Groomer(Rules())
        added = land(core, disk, s).notes
        again = land(core, disk, dataclasses.replace(s, seen=dataclasses.replace(s.seen, ino=7)))
        gone = core.gone(s.name).notes
        assert [(n.event, n.fields["name"]) for n in added + again.notes + gone] == [
            (events.ADDED, s.name), (events.REPLACED, s.name), (events.REMOVED, s.name)]
        assert core.gone(s.name).notes == []  # twice gone is once news

    def test_a_hit_is_a_use_on_the_activity_clock(self) -> None:
        """Landings move the activity clock by their size; a hit stamps the
        file with the current activity, a same-header rewrite does not."""
        a, b = chain(1000), chain(2000, reason=Reason.EVICT)
        disk = disk_of([])
        core = Groomer(Rules(supersede=False))
        land(core, disk, a[0])
        land(core, disk, b[0])
        assert core.activity == a[0].size + b[0].size
        act = lambda: int(core.index.get(a[0].name).act)  # type: ignore[union-attr]  # noqa: E731
        assert act() == a[0].size
        hit = dataclasses.replace(a[0], header=a[0].header.touched(T0))
        land(core, disk, hit)
        assert act() == core.activity

    def test_clock_skew_is_noted_once_and_does_not_protect_for_ever(self) -> None:
        """A created_at ahead of ours is said once; the file's age counts from
        when the core saw it, so it ages out of protect_new."""
        ahead = [snapshot(C[:n], reason=Reason.EVICT, created_at=T0 + DAY) for n in (900, 1900)]
        disk = disk_of([])
        core = Groomer(Rules(supersede=False))
        notes = land(core, disk, ahead[0]).notes + land(core, disk, ahead[1]).notes
        assert [n.event for n in notes].count(events.CLOCK_SKEW) == 1
        cols = core.index.columns()
        assert young(cols, core.clock(T0 + 30), 60).all()  # young, as seen
        assert not young(cols, core.clock(T0 + 61), 60).any()


class TestSettle:
    def test_a_failed_unlink_puts_the_file_back_and_says_why_once(self) -> None:
        """The deleter could not unlink: the file counts again, and the core
        says once that the budget cannot be reached because unlinks fail."""
        snaps = chain(500, reason=Reason.COLD) + chain(800, reason=Reason.EVICT)
        disk = disk_of(snaps)
        core = Groomer(Rules(budget=1, protect_new=0, supersede=False))
        step = indexed(core, disk)
        assert len(step.decisions) == 2
        notes = [n for d in step.decisions for n in core.settle(d, Result.FAILED)]
        assert sorted(core.index.names) == sorted(s.name for s in snaps)
        assert [n.fields["why"] for n in notes] == ["unlinks failed (see snapshot.unlink_failed)"]
        assert core.usage == sum(s.size for s in snaps)

    def test_abandoned_decisions_put_their_files_back(self) -> None:
        """A pass that stopped before the deleter ran leaves nothing pending."""
        snaps = chain(500, reason=Reason.COLD)
        core = Groomer(Rules(budget=1, protect_new=0))
        step = indexed(core, disk_of(snaps))
        core.abandon(step.decisions)
        assert list(core.index.names) == [snaps[0].name]
        assert core.usage == core.index.total_bytes


class TestDryRun:
    def test_held_files_stay_out_until_they_change(self) -> None:
        """A dry run's judged version stays out of the index (so a dry run
        decides what a real run would), through landings and rescans alike,
        until the engine changes it."""
        snaps = chain(500, 900, reason=Reason.EVICT)
        disk = disk_of(snaps)
        core = Groomer(Rules(budget=snaps[0].size + snaps[1].size - 1, low_watermark=1.0,
                             protect_new=0, dry_run=True, supersede=False))  # fmt: skip
        step = indexed(core, disk)
        (d,) = step.decisions
        core.settle(d, Result.WOULD_UNLINK)
        assert core.held == {d.name: d.seen}
        assert land(core, disk, next(s for s in snaps if s.name == d.name)).notes == []
        listing = Listing.of({s.name: s.seen for s in snaps})
        assert [b.decode() for b in core.drift(listing).added.tolist()] == []
        touched = Listing.of({s.name: dataclasses.replace(s.seen, mtime_ns=9) for s in snaps})
        assert d.name in [b.decode() for b in core.drift(touched).to_read.tolist()]
        assert core.held == {}

    def test_switching_the_dry_run_off_brings_held_files_back(self) -> None:
        """#11.5: after a reload with dry_run off, a rescan indexes the held
        files again and the real pass decides them."""
        snaps = chain(500, 900, reason=Reason.EVICT)
        disk = disk_of(snaps)
        rules = Rules(budget=snaps[0].size + snaps[1].size - 1, low_watermark=1.0, protect_new=0,
                      dry_run=True, supersede=False)  # fmt: skip
        core = Groomer(rules)
        (d,) = indexed(core, disk).decisions
        core.settle(d, Result.WOULD_UNLINK)
        core.reconfigure(dataclasses.replace(rules, dry_run=False))
        listing = Listing.of({s.name: s.seen for s in snaps})
        drift = core.drift(listing)
        step, repairs = core.rescanned(drift, SimTexts(disk).heads(drift.to_read), SimTexts(disk),
                                       T0)  # type: ignore[arg-type]
        assert repairs.added == 1
        assert [x.name for x in step.decisions] == [d.name]


class TestInvalidAndBudget:
    def test_an_invalid_file_is_noted_once_per_version(self) -> None:
        """A file the engine would not load leaves the index and is noted once
        for each version of it."""
        (s,) = chain(1000)
        core = Groomer(Rules())
        core.index.put(s)
        bad = Invalid(s.name, "truncated", "short file", s.seen)
        assert [n.event for n in core.invalid_file(bad).notes] == [events.INVALID]
        assert core.invalid_file(bad).notes == []
        other = dataclasses.replace(bad, seen=dataclasses.replace(s.seen, size=1))
        assert len(core.invalid_file(other).notes) == 1
        assert s.name not in core.index

    def test_the_engine_budget_keeps_room_for_the_next_store(self) -> None:
        """With engine_budget, the limit is the engine's budget less the
        largest recent store, so the engine never has to evict by itself.
        (An agent's file, which the engine would evict before anything, keeps
        kvgroomd from leaving any of its choices to the engine.)"""
        agent = snapshot(C[:50], reason=Reason.AGENT_SESSION, created_at=OLD, size=100, tokens=1)
        snaps = [snapshot(C[:n], reason=Reason.EVICT, created_at=OLD, size=200)
                 for n in (500, 600, 700)]  # fmt: skip
        core = Groomer(Rules(engine_budget=1000, supersede=False, protect_new=0))
        disk = disk_of([])
        for s in (agent, *snaps):
            land(core, disk, s)
        assert core.limit() == 800
        big = snapshot(C[:800], reason=Reason.EVICT, created_at=OLD, size=400)
        step = land(core, disk, big)
        assert core.limit() == 600
        assert core.index.total_bytes <= 600 * 0.9
        assert step.decisions

    def test_a_file_larger_than_the_limit_is_left_to_the_engine(self) -> None:
        """A save larger than the room left under the engine's budget cannot
        be kept under the limit at all: it is not unlinked (the engine evicts
        it when it needs the room, and it may serve a hit first); the other
        files are kept under the limit without it, and no unreachable-budget
        warning is logged for it. Here the room kept (700: the save, plus 100
        the engine once had to evict by itself) leaves a limit of 300, and
        the directory never exceeds the engine's budget."""
        core = Groomer(Rules(engine_budget=1000, supersede=False, protect_new=0))
        disk = disk_of([])
        once = snapshot(C[:300], reason=Reason.EVICT, created_at=OLD, size=100)
        land(core, disk, once)
        core.gone(once.name)  # evicted by the engine: room that was missing
        big = snapshot(C[:800], reason=Reason.EVICT, created_at=OLD, size=600)
        land(core, disk, big)
        assert core.limit() == 300
        steps = [land(core, disk, snapshot(C[:n], reason=Reason.EVICT, created_at=OLD, size=100))
                 for n in (400, 500, 600, 700)]  # fmt: skip
        assert core.index.total_bytes + core.ledger.pending_bytes <= 1000
        decided = [d.name for st in steps for d in st.decisions]
        assert decided and big.name not in decided and big.name in core.index
        assert core.index.total_bytes - big.size <= 300
        assert events.BUDGET_UNREACHABLE not in [n.event for st in steps for n in st.notes]
        need = core.headroom.need()
        core.gone(big.name)  # the engine evicts it when it stores: not room missed
        assert core.headroom.need() == need
        capped = Groomer(Rules(engine_budget=1000, budget=300, supersede=False, protect_new=0))
        for sn in (snapshot(C[:n], reason=Reason.EVICT, created_at=OLD, size=100)
                   for n in (400, 500, 600)):  # fmt: skip
            land(capped, disk, sn)
        assert big.name in [d.name for d in land(capped, disk, big).decisions]  # a cap binds

    def test_a_file_larger_than_the_limit_never_lifts_usage_over_a_cap(self) -> None:
        """With a `budget:` cap above the engine's limit, the cap is the
        ceiling: a file larger than the limit stays only while everything
        fits under the cap."""
        snaps = [snapshot(C[:n], reason=Reason.EVICT, created_at=OLD, size=100)
                 for n in (400, 500, 600, 700)]  # fmt: skip
        core = Groomer(Rules(engine_budget=1000, budget=850, supersede=False, protect_new=0))
        disk = disk_of([])
        for s in snaps:
            land(core, disk, s)
        big = snapshot(C[:800], reason=Reason.EVICT, created_at=OLD, size=700)
        settle_all(core, land(core, disk, big), disk)
        assert core.limit() is not None and core.limit() <= 850
        assert core.index.total_bytes <= 850

    @staticmethod
    def room_for_a_big_save(rules: Rules) -> tuple[Groomer, list[Snapshot], Step]:
        """A rung and two saves (100 bytes each), then a 500-byte save lands:
        the room kept for the next store becomes 500. The rung is the lowest
        file for kvgroomd and for the engine alike; the big save is the
        engine's next."""
        files = [snapshot(C[:300], reason=Reason.CONTINUED, created_at=OLD, size=100)]
        files += [snapshot(C[:n], reason=Reason.EVICT, created_at=OLD, size=100)
                  for n in (600, 700)]  # fmt: skip
        files.append(snapshot(C[:800], reason=Reason.EVICT, created_at=OLD, size=500))
        core = Groomer(dataclasses.replace(rules, supersede=False, protect_new=0))
        disk = disk_of([])
        for s in files[:-1]:
            land(core, disk, s)
        return core, files, land(core, disk, files[-1])

    def test_a_binding_cap_leaves_nothing_to_the_engine(self) -> None:
        """When the configured cap is the limit, kvgroomd unlinks what it
        chose itself: the engine would never evict under its larger budget."""
        core, _, step = self.room_for_a_big_save(Rules(engine_budget=1000, budget=400))
        assert step.decisions and core.index.total_bytes <= 400 * 0.9
        assert core.limit() == 400

    def test_files_the_engine_evicts_first_are_left_to_it(self) -> None:
        """Of the files chosen, those the engine's own eviction takes before
        any file kept stay until it stores: counted as room by limit(), and
        their eviction by the engine does not grow the room kept."""
        core, (rung, *saves, big), step = self.room_for_a_big_save(Rules(engine_budget=1000))
        assert step.decisions == [] and events.BUDGET_UNREACHABLE not in [
            n.event for n in step.notes]
        assert core.usage == 800 and core.limit() == 1000
        need = core.headroom.need()
        core.gone(rung.name)  # the engine evicts what it was left, when it stores
        assert core.headroom.need() == need
        assert core.limit() == 1000 - need + big.size
        core.gone(saves[0].name)  # an eviction kvgroomd did not agree to
        assert core.headroom.need() == need + saves[0].size

    def test_a_file_left_then_unlinked_by_kvgroomd_is_forgotten(self) -> None:
        """A file left to the engine that kvgroomd later unlinks itself (here:
        a cap set by a reload binds) is no longer one it agreed to leave: the
        set of such names does not grow for the daemon's lifetime."""
        core, (rung, *saves, big), _ = self.room_for_a_big_save(Rules(engine_budget=1000))
        assert rung.name in core.deferred.names
        core.reconfigure(dataclasses.replace(core.rules, budget=300))
        step = core.tick(T0)
        assert rung.name in [d.name for d in step.decisions]
        settle_all(core, step, disk_of([rung, *saves, big]))
        assert not core.deferred.gone(rung.name)

    def test_files_left_to_the_engine_are_room_until_hit(self) -> None:
        """Usage over the limit only by files left to the engine needs no new
        pass (one would take kvgroomd's own choices down to the low
        watermark again); a hit takes a file out of that room: judged
        afresh, its eviction by the engine then counts as room missed."""
        files = [snapshot(C[:n], reason=r, created_at=OLD, size=sz) for n, r, sz in (
            (300, Reason.CONTINUED, 100), (600, Reason.EVICT, 200), (700, Reason.EVICT, 200),
            (800, Reason.EVICT, 300))]  # fmt: skip
        rung, first = files[0], files[1]
        core = Groomer(Rules(engine_budget=1000, supersede=False, protect_new=0))
        disk = disk_of([])
        steps = [land(core, disk, s) for s in files]
        assert [d.name for d in steps[-1].decisions] == [first.name]  # the rung stays
        settle_all(core, steps[-1], disk)
        assert core.limit() == 1000 - 300 + rung.size
        later = snapshot(C[:900], reason=Reason.EVICT, created_at=OLD, size=150)
        assert land(core, disk, later).decisions == []  # 750: within the room in waiting
        need = core.headroom.need()
        land(core, disk, dataclasses.replace(rung, header=rung.header.touched(T0)))
        assert rung.name not in core.deferred.names  # judged afresh: no longer room
        assert core.limit() == 1000 - 300 + core.deferred.size(core.index)
        core.gone(rung.name)
        assert core.headroom.need() == need + rung.size

    def test_files_left_are_judged_again_when_a_fresh_one_ranks_below_them(self) -> None:
        """A fresh file can rank below the files left to the engine on the
        engine's own score (a fresh store has no hits): the engine would then
        take it first, so the landing plans again, and what is left after it
        is again what the engine takes before anything kept."""
        files = [snapshot(C[:n], reason=r, created_at=OLD, size=sz) for n, r, sz in (
            (300, Reason.CONTINUED, 100), (600, Reason.EVICT, 200), (700, Reason.EVICT, 200),
            (800, Reason.EVICT, 300))]  # fmt: skip
        rung = files[0]
        core = Groomer(Rules(engine_budget=1000, supersede=False, protect_new=0))
        disk = disk_of([])
        settle_all(core, [land(core, disk, s) for s in files][-1], disk)
        assert core.deferred.names == {rung.name}
        # 75 tokens in 150 bytes: below the rung's 3 per byte on the engine's score.
        low = snapshot(C[:900], reason=Reason.CONTINUED, created_at=OLD, size=150, tokens=75)
        step = land(core, disk, low)
        assert rung.name not in core.deferred.names and step.decisions == []
        assert core.deferred.names == {low.name}
        assert core.deferred.still_first(core.index, core.clock(T0))

    def test_unreachable_budget_is_said_once_per_episode(self) -> None:
        """Files budget eviction never takes (agent, unknown reasons) hold usage
        over the limit: one note, not one per event."""
        kept = [snapshot(C[:n], reason=Reason.AGENT_SESSION, created_at=T0) for n in (500, 600)]
        core = Groomer(Rules(budget=1, supersede=False))
        disk = disk_of([])
        notes = land(core, disk, kept[0]).notes + land(core, disk, kept[1]).notes
        assert [n.event for n in notes].count(events.BUDGET_UNREACHABLE) == 1
        assert core.tick(T0 + 10).notes == []

    def test_young_files_do_not_hold_usage_over_the_limit(self) -> None:
        """protect_new never leaves the cache over its limit: young files go
        too, in value order (the cheaper one first)."""
        fresh = [snapshot(C[:n], reason=Reason.EVICT, created_at=T0) for n in (500, 3000)]
        core = Groomer(Rules(budget=fresh[1].size, low_watermark=1.0, protect_new=3600,
                             supersede=False))  # fmt: skip
        disk = disk_of([])
        decided = [d.name for s in fresh for d in land(core, disk, s).decisions]
        assert decided == [fresh[0].name]


def test_a_rescan_of_an_unwatched_directory_stamps_activity_by_last_use() -> None:
    """Files found by a scan get activity stamps in the order they were last
    used, as if they had landed so."""
    ages = {900: T0 - 3 * DAY, 1900: T0 - DAY, 2900: T0 - 2 * DAY}
    snaps = [snapshot(C[:n], reason=Reason.EVICT, created_at=t) for n, t in ages.items()]
    core = Groomer(Rules(supersede=False))
    indexed(core, disk_of(snaps))
    cols = core.index.columns()
    by_age = np.argsort(cols["created_at"])
    assert np.all(np.diff(cols["act"][by_age].astype(np.int64)) > 0)
    assert core.activity == sum(s.size for s in snaps)
