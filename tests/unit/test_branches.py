"""Reuse evidence by branch point (core/branches.py, core/removed.py), and how
the decision core gathers it: file-free, events in, index columns out."""

from __future__ import annotations

import dataclasses

from kvgroomd.core.branches import Siblings
from kvgroomd.core.decision import Cause, Result
from kvgroomd.core.groomer import Groomer, Rules
from kvgroomd.core.index import Snapshot, decide_rows
from kvgroomd.core.removed import Removed
from kvgroomd.format.header import Reason
from kvgroomd.format.prefix import tail_of
from kvgroomd.sim.groom import SimTexts, snapshot_of
from tests.unit.builders import T0, MemDisk, chat_text, snapshot

DOC = chat_text(6000, seed="doc")  # a document after a system prompt


def question(i: int, extra: int = 400) -> bytes:
    """The i-th one-shot question on DOC, with its reply: diverges from the
    others right after the document."""
    return DOC + (f"<｜User｜>question {i}?<｜Assistant｜>" * 40).encode()[:extra]


class TestSiblings:
    def test_siblings_share_their_parents_counts(self) -> None:
        b = Siblings()
        assert b.born("q1", "doc") == (0, 0)
        b.born("q2", "doc")
        ev = b.unused("q1")
        assert ev is not None and (ev.used, ev.unused, ev.saves) == (0, 1, ("q2",))
        assert b.born("q3", "doc") == (0, 1)
        ev = b.used("q2")
        assert ev is not None and (ev.used, ev.unused, ev.saves) == (1, 1, ("q3",))
        assert b.counts("doc") == (1, 1)

    def test_a_save_counts_once_and_forgetting_proves_nothing(self) -> None:
        b = Siblings()
        b.born("s", "p")
        b.used("s")
        assert b.used("s") is None and b.unused("s") is None
        assert b.counts("p") == (1, 0)
        b.born("t", "p")
        b.forget("t")
        assert b.unused("t") is None
        assert b.counts("p") == (1, 0)

    def test_a_new_version_of_a_save_starts_afresh(self) -> None:
        b = Siblings()
        b.born("s", "p")
        b.born("s", "other")  # the name landed again, extending something else
        b.unused("s")
        assert (b.counts("p"), b.counts("other")) == ((0, 0), (0, 1))

    def test_only_the_last_parents_are_remembered(self) -> None:
        b = Siblings(parents=2)
        for p in ("a", "b", "c"):
            b.born(f"s-{p}", p)
            b.unused(f"s-{p}")
        assert [b.counts(p) for p in "abc"] == [(0, 0), (0, 1), (0, 1)]


def _name(text: bytes) -> str:
    return snapshot(text).name


class TestRemoved:
    def test_a_landing_is_linked_to_the_removed_files_it_extends(self) -> None:
        r = Removed()
        for text in (DOC[:3000], DOC, question(1)):
            r.removed(_name(text), len(text), tail_of(text, len(text)))
        found = r.extended_by(_name(question(2)), question(2))
        assert sorted(found, key=lambda f: f[1]) == [(_name(DOC[:3000]), 3000),
                                                     (_name(DOC), len(DOC))]  # fmt: skip
        r.back(_name(DOC))  # it landed again: on disk, not removed
        assert r.extended_by(_name(question(2)), question(2)) == [(_name(DOC[:3000]), 3000)]

    def test_a_text_that_is_not_its_names_proves_nothing(self) -> None:
        r = Removed()
        r.removed(_name(DOC), len(DOC), tail_of(DOC, len(DOC)))
        assert r.extended_by(_name(question(1)), question(2)) == []

    def test_the_ring_forgets_the_oldest(self) -> None:
        r = Removed(size=2)
        texts = [DOC[:n] for n in (1000, 2000, 3000)]
        for t in texts:
            r.removed(_name(t), len(t), tail_of(t, len(t)))
        assert _name(texts[0]) not in r and _name(texts[2]) in r and len(r) == 2
        assert sorted(r.extended_by(_name(DOC), DOC), key=lambda f: f[1]) == [
            (_name(texts[1]), 2000), (_name(texts[2]), 3000)]


class Directory:
    """Files landing in a core, as the daemon reports them."""

    def __init__(self, rules: Rules | None = None) -> None:
        self.disk = MemDisk([], {})
        self.core = Groomer(rules or Rules())

    def land(self, text: bytes, reason: Reason, **fields: object) -> Snapshot:
        s = snapshot(text, reason=reason, **fields)
        self.disk.index.put(s)
        self.disk.texts[s.name] = text
        self.core.landed(snapshot_of(self.disk, s.name), SimTexts(self.disk), T0)  # type: ignore[arg-type]
        return s

    def touch(self, s: Snapshot) -> None:
        """The engine served a hit from `s`."""
        hit = dataclasses.replace(s, header=s.header.touched(T0))
        self.disk.index.put(hit)
        self.core.landed(snapshot_of(self.disk, s.name), SimTexts(self.disk), T0)  # type: ignore[arg-type]

    def engine_removes(self, s: Snapshot) -> None:
        self.disk.remove(s.name, "engine")
        self.core.gone(s.name)

    def we_unlink(self, s: Snapshot) -> None:
        """kvgroomd's own decision for `s`, carried out."""
        (d,) = decide_rows(self.core.index, self.core.index.rows_of([s.name]), Cause.BUDGET, T0)
        self.core.ledger.hold(self.core.index, [d])
        self.disk.remove(s.name, "budget")
        self.core.settle(d, Result.UNLINKED)

    def evidence(self, s: Snapshot) -> tuple[int, int]:
        assert s.name in self.core.index
        cols = self.core.index.columns()[self.core.index.rows_of([s.name])[0]]
        return int(cols["sib_used"]), int(cols["sib_unused"])


class TestTheCoreGathersEvidence:
    def test_questions_on_a_consumed_document_count_against_the_next(self) -> None:
        """Each question's save extends the document's rung, which is gone by
        then (the engine consumed it): the removed ring still links them, and
        every save that left unused counts against the next one."""
        d = Directory()
        saves = []
        for i in range(3):
            rung = d.land(DOC, Reason.CONTINUED)
            d.engine_removes(rung)  # consumed by the question's lookup
            saves.append(d.land(question(i), Reason.EVICT))
            assert d.evidence(saves[-1]) == (0, i)
            d.we_unlink(saves[-1])
        assert d.core.branches.siblings.open_saves == 0  # nothing kept of files gone

    def test_siblings_still_on_disk_follow_the_counts(self) -> None:
        d = Directory()
        d.land(DOC, Reason.CONTINUED)
        a, b, c = (d.land(question(i), Reason.EVICT) for i in range(3))
        d.engine_removes(a)  # small: the engine evicted it, not consumed
        assert d.evidence(b) == d.evidence(c) == (0, 1)
        d.touch(b)  # asked again after all
        assert d.evidence(c) == (1, 1)
        assert d.evidence(b) == (0, 1)  # a rewrite in place keeps the row's counts

    def test_a_conversation_that_goes_on_counts_as_used(self) -> None:
        """A later landing that extends a save (the conversation came back)
        is a use of it, as a hit is."""
        d = Directory()
        d.land(DOC, Reason.COLD)
        d.land(question(0, 200), Reason.EVICT)
        other = d.land(question(1, 200), Reason.EVICT)
        d.land(question(0, 400), Reason.EVICT)  # extends the first
        assert d.evidence(other) == (1, 0)

    def test_a_large_file_the_engine_removed_proves_nothing(self) -> None:
        """Over cold_max_tokens the engine consumes a file on its first hit:
        its leaving may be a use. kvgroomd's own unlink is not one."""
        d = Directory(Rules(cold_max_tokens=100))
        d.land(DOC, Reason.CONTINUED)
        a, b, c = (d.land(question(i), Reason.EVICT) for i in range(3))
        d.engine_removes(a)
        assert d.evidence(c) == (0, 0)
        d.we_unlink(b)
        assert d.evidence(c) == (0, 1)

    def test_no_evidence_without_supersession_reading_texts(self) -> None:
        d = Directory(Rules(supersede=False, prefixes=False))
        d.land(DOC, Reason.CONTINUED)
        a, b = (d.land(question(i), Reason.EVICT) for i in range(2))
        d.engine_removes(a)
        assert d.evidence(b) == (0, 0)
