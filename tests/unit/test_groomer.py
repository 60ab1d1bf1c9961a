"""The decision core (core/groomer.py), file-free: events in, decisions and notes out."""

from __future__ import annotations

import dataclasses

import numpy as np

from kvgroomd import events
from kvgroomd.core.decision import Cause, Result
from kvgroomd.core.drift import Listing
from kvgroomd.core.evict import young
from kvgroomd.core.facts import Invalid
from kvgroomd.core.groomer import Groomer, Rules
from kvgroomd.core.index import Snapshot
from kvgroomd.format.header import Reason
from kvgroomd.sim.groom import SimTexts, snapshot_of
from tests.unit.builders import DAY, T0, MemDisk, chat_text, indexed, snapshot

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
        largest recent store, so the engine never has to evict by itself."""
        snaps = [snapshot(C[:n], reason=Reason.EVICT, created_at=OLD, size=100)
                 for n in (500, 600, 700)]  # fmt: skip
        core = Groomer(Rules(engine_budget=1000, supersede=False, protect_new=0))
        disk = disk_of([])
        for s in snaps:
            land(core, disk, s)
        assert core.limit() == 900
        big = snapshot(C[:800], reason=Reason.EVICT, created_at=OLD, size=700)
        step = land(core, disk, big)
        assert core.limit() == 300
        assert core.index.total_bytes <= 300 * 0.9
        assert step.decisions

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
