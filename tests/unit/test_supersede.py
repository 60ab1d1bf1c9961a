"""Supersession (spec §4): one snapshot per prefix chain.

The four cases of the upstream proposal: a shorter `continued` of the same
conversation goes when a longer cold/continued lands; an unrelated entry stays;
N never supersedes itself; intentional checkpoints (cold, evict, shutdown)
stay, and an evict/shutdown arrival supersedes nothing.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from kvgroomd.core.decision import Cause, Decision
from kvgroomd.core.groomer import Groomer, Rules
from kvgroomd.core.index import Index, Snapshot
from kvgroomd.core.supersede import (
    CHAIN_REASONS,
    TRIGGERS,
    can_stand_in,
    candidate_rows,
    prefixes_of,
    sweep_pairs_flat,
)
from kvgroomd.format.header import ABI_CURRENT, PREFIX_BYTES, Reason, sha1_hex
from kvgroomd.format.prefix import FIRST_READ, tail_of, text_keys
from tests.unit.builders import (
    CTX,
    DAY,
    T0,
    MemDisk,
    chat_text,
    index_of,
    indexed,
    settle_all,
    snapshot,
)

NOW = T0
AVAILABLE = FIRST_READ - PREFIX_BYTES
C = chat_text(40_000)  # conversation C; its prefixes are the chain
U = chat_text(40_000, seed="U")  # an unrelated conversation


@dataclasses.dataclass(frozen=True)
class Landing:
    """What the decision core made of one landing."""

    covered: tuple[str, ...]  # names whose text the new one strictly extends
    superseded: tuple[Decision, ...]


class OneText:
    """A text source holding one text (all a landing reads)."""

    def __init__(self, name: str, text: bytes) -> None:
        self.name, self.data = name, text

    def text(self, snap: Snapshot) -> bytes | None:
        return self.data if snap.name == self.name else None

    def texts(self, names, lengths):
        raise AssertionError("a landing reads only its own text")

    heads = texts


def land(index: Index, new: Snapshot, text: bytes, *, strict_quant: bool = False) -> Landing:
    """What the core decides when `new` (with `text`) lands next to what `index` holds."""
    core = Groomer(Rules(strict_quant=strict_quant))
    for name in index.names:
        if name != new.name:
            core.index.put(index.get(name))  # type: ignore[arg-type]
    step = core.landed(new, OneText(new.name, text), NOW)
    decided = {d.name for d in step.decisions}
    cols = core.index.columns()
    covered = {n for i, n in enumerate(core.index.names) if cols["covered"][i]} | decided
    return Landing(tuple(sorted(covered)), tuple(step.decisions))


def superseded(v: Landing) -> set[str]:
    return {d.name for d in v.superseded}


NOTHING = Landing((), ())


def candidates(index: Index, new: Snapshot, text: bytes, *, strict_quant: bool = False) -> list[str]:
    """Names `candidate_rows` offers for `new` with its text."""
    row = index.row_of(new.name)
    assert row is not None
    return [index.name_at(int(r)) for r in candidate_rows(index, row, text,
                                                            strict_quant=strict_quant)]


def cont(n: int, text: bytes = C, **kw: object) -> Snapshot:
    """A `continued` snapshot of the first n bytes of `text`."""
    return snapshot(text[:n], reason=Reason.CONTINUED, **kw)  # type: ignore[arg-type]


class TestSupersedes:
    @pytest.mark.parametrize("reason", [Reason.CONTINUED, Reason.COLD])
    def test_strict_prefix_continued_is_superseded(self, reason: Reason) -> None:
        """A continued whose text is a strict prefix of a new cold/continued goes."""
        old = cont(10_240)
        new = snapshot(C[:20_480], reason=reason)
        v = land(index_of(old, new), new, C[:20_480])
        assert v.covered == (old.name,)
        assert superseded(v) == {old.name}

    def test_decision_names_the_new_snapshot(self) -> None:
        """The superseded decision carries O's identity and facts and names N."""
        old = cont(10_240, hits=2, created_at=NOW - 300, size=157_000)
        new = cont(20_480)
        (d,) = land(index_of(old, new), new, C[:20_480]).superseded
        assert d.name == old.name
        assert d.cause is Cause.SUPERSEDED
        assert d.seen == old.seen
        assert d.fields == {
            "sha": old.sha, "reason": "continued", "tokens": 10_240, "hits": 2,
            "size": 157_000, "age_s": 300, "superseded_by": new.sha,
            "superseded_by_tokens": 20_480,
        }  # fmt: skip

    def test_whole_ladder_goes_at_once(self) -> None:
        """Every shorter continued of the chain is superseded by the longest."""
        ladder = [cont(n) for n in (10_240, 20_480, 30_720)]
        new = cont(40_000)
        v = land(index_of(*ladder, new), new, C[:40_000])
        assert superseded(v) == {s.name for s in ladder}

    def test_upper_case_names_work_both_ways(self) -> None:
        """Upper-case hex names (which the engine accepts) supersede and are superseded."""
        old = cont(10_000)
        old = dataclasses.replace(old, name=old.name[:40].upper() + ".kv")
        new = cont(20_000)
        new = dataclasses.replace(new, name=new.name[:40].upper() + ".kv")
        v = land(index_of(old, new), new, C[:20_000])
        assert superseded(v) == {old.name}

    def test_short_prefix_below_head_bytes_is_found(self) -> None:
        """A continued shorter than the 64-byte head bucket is still a candidate."""
        old = cont(40)
        new = cont(5000)
        assert superseded(land(index_of(old, new), new, C[:5000])) == {old.name}

    def test_spec_example_ladder(self) -> None:
        """Spec §4's example: 1-3 go as the next lands; 4 stays because 5 is an evict."""
        core = Groomer(Rules())
        sizes = [10_240, 20_480, 30_720, 40_000]
        for i, n in enumerate(sizes):
            step = core.landed(cont(n), OneText(cont(n).name, C[:n]), NOW)
            assert [d.name for d in settle_all(core, step)] == (
                [cont(sizes[i - 1]).name] if i else [])  # fmt: skip
        text = C[:40_000] + b" and the tail"
        last = snapshot(text, reason=Reason.EVICT)
        assert core.landed(last, OneText(last.name, text), NOW).decisions == []
        assert sorted(core.index.names) == sorted([cont(40_000).name, last.name])
        assert core.index.get(cont(40_000).name).covered  # type: ignore[union-attr]


class TestKept:
    def test_unrelated_entry_is_kept(self) -> None:
        """A continued of another conversation is neither covered nor superseded."""
        other = cont(10_240, U)
        new = cont(20_480)
        v = land(index_of(other, new), new, C[:20_480])
        assert v.covered == ()
        assert v.superseded == ()

    def test_same_head_but_diverging_text_is_kept(self) -> None:
        """A continued sharing the first bytes but diverging later is kept."""
        diverged = C[:5000] + b"X" + C[5001:10_000]
        old = snapshot(diverged, reason=Reason.CONTINUED)
        new = cont(20_000)
        index = index_of(old, new)
        assert candidates(index, new, C[:20_000]) == [old.name]
        v = land(index, new, C[:20_000])
        assert v.covered == ()
        assert v.superseded == ()

    def test_longer_continued_is_kept(self) -> None:
        """A continued longer than N (N is its prefix) is not superseded by N."""
        longer = cont(30_000)
        new = cont(10_000)
        v = land(index_of(longer, new), new, C[:10_000])
        assert v.covered == ()
        assert v.superseded == ()

    def test_cold_checkpoint_is_kept_but_covered(self) -> None:
        """A cold prefix is never superseded, though N's text covers it."""
        anchor = snapshot(C[:2048], reason=Reason.COLD)
        new = cont(10_240)
        v = land(index_of(anchor, new), new, C[:10_240])
        assert v.covered == (anchor.name,)
        assert v.superseded == ()

    @pytest.mark.parametrize("reason", [Reason.EVICT, Reason.SHUTDOWN])
    def test_evict_and_shutdown_prefixes_are_kept_but_covered(self, reason: Reason) -> None:
        """Evict and shutdown prefixes are intentional checkpoints: kept, covered."""
        old = snapshot(C[:3000], reason=reason)
        new = cont(10_000)
        v = land(index_of(old, new), new, C[:10_000])
        assert v.covered == (old.name,)
        assert v.superseded == ()

    @pytest.mark.parametrize("reason", [Reason.EVICT, Reason.SHUTDOWN])
    def test_evict_and_shutdown_arrivals_supersede_nothing(self, reason: Reason) -> None:
        """An evict/shutdown N supersedes nothing, yet reports what it covers."""
        olds = [cont(10_240), snapshot(C[:2048], reason=Reason.COLD)]
        new = snapshot(C[:20_000], reason=reason)
        v = land(index_of(*olds, new), new, C[:20_000])
        assert set(v.covered) == {s.name for s in olds}
        assert v.superseded == ()

    @pytest.mark.parametrize("reason", [Reason.AGENT_SYSTEM, Reason.AGENT_SESSION, Reason.UNKNOWN])
    def test_agent_and_unknown_entries_are_never_candidates(self, reason: Reason) -> None:
        """agent-* and unknown prefixes are neither candidates, covered nor superseded."""
        old = snapshot(C[:3000], reason=reason)
        new = cont(10_000)
        index = index_of(old, new)
        assert candidates(index, new, C[:10_000]) == []
        v = land(index, new, C[:10_000])
        assert (v.covered, v.superseded) == ((), ())

    def test_unknown_raw_reason_code_is_never_superseded(self) -> None:
        """A prefix whose reason byte is above 6 reads as unknown and is kept."""
        old = snapshot(C[:3000], reason=Reason.UNKNOWN, reason_code=9)
        new = cont(10_000)
        assert land(index_of(old, new), new, C[:10_000]).covered == ()

    @pytest.mark.parametrize("reason", [Reason.AGENT_SYSTEM, Reason.AGENT_SESSION, Reason.UNKNOWN])
    def test_agent_and_unknown_arrivals_take_no_part(self, reason: Reason) -> None:
        """An agent or unknown N has no candidates at all."""
        old = cont(3000)
        new = snapshot(C[:10_000], reason=reason)
        assert candidates(index_of(old, new), new, C[:10_000]) == []
        assert land(index_of(old, new), new, C[:10_000]) == NOTHING


class TestNeverItself:
    def test_new_is_not_its_own_candidate(self) -> None:
        """N, indexed, is not among its own candidates."""
        new = cont(10_000)
        index = index_of(new)
        assert candidates(index, new, C[:10_000]) == []
        assert land(index, new, C[:10_000]) == NOTHING

    def test_same_text_under_another_name_case_is_kept(self) -> None:
        """An equal-length twin (same text, upper-case hex name) is not a strict
        prefix, so it is neither a candidate nor covered."""
        new = cont(10_000)
        twin = dataclasses.replace(cont(10_000), name=new.name[:40].upper() + ".kv")
        index = index_of(twin, new)
        assert candidates(index, new, C[:10_000]) == []
        assert land(index, new, C[:10_000]) == NOTHING

    def test_equal_length_other_text_is_kept(self) -> None:
        """A continued of equal length but other text is kept."""
        other = snapshot(C[:9_999] + b"#", reason=Reason.CONTINUED)
        new = cont(10_000)
        v = land(index_of(other, new), new, C[:10_000])
        assert (v.covered, v.superseded) == ((), ())


class TestCompatibility:
    def test_other_model_is_kept(self) -> None:
        """A prefix written for another model_id is not superseded."""
        old = cont(10_000, model_id=1)
        new = cont(20_000, model_id=0)
        assert land(index_of(old, new), new, C[:20_000]).superseded == ()

    @pytest.mark.parametrize(("strict", "gone"), [(True, False), (False, True)])
    def test_quant_matters_only_when_strict(self, strict: bool, gone: bool) -> None:
        """A prefix of other quant goes only when cross-quant reuse is allowed."""
        old = cont(10_000, quant_bits=4)
        new = cont(20_000, quant_bits=2)
        v = land(index_of(old, new), new, C[:20_000], strict_quant=strict)
        assert (superseded(v) == {old.name}) is gone

    def test_same_quant_goes_when_strict(self) -> None:
        """With strict quant, a prefix of the same quant still goes."""
        old = cont(10_000, quant_bits=4)
        new = cont(20_000, quant_bits=4)
        assert superseded(land(index_of(old, new), new, C[:20_000], strict_quant=True)) == {
            old.name
        }

    @pytest.mark.parametrize(
        ("old_ctx", "new_ctx", "gone"),
        [(CTX, CTX, True), (2 * CTX, CTX, True), (CTX, 2 * CTX, False)],
    )
    def test_ctx_size_new_must_not_exceed_old(self, old_ctx: int, new_ctx: int, gone: bool) -> None:
        """O goes only when N.ctx_size <= O.ctx_size (a small server can load N too)."""
        old = cont(10_000, ctx_size=old_ctx)
        new = cont(20_000, ctx_size=new_ctx)
        assert (superseded(land(index_of(old, new), new, C[:20_000])) == {old.name}) is gone

    @pytest.mark.parametrize(
        ("old_abi", "new_abi", "gone"),
        [(2, 2, True), (0, 0, True), (2, 0, False), (0, 2, True)],
    )
    def test_legacy_new_stands_in_only_for_legacy(
        self, old_abi: int, new_abi: int, gone: bool
    ) -> None:
        """A legacy (ABI 0) N, invisible to current engines, never supersedes a
        current O; a current N stands in for a legacy O."""
        old = cont(10_000, abi=old_abi)
        new = cont(20_000, abi=new_abi)
        assert (superseded(land(index_of(old, new), new, C[:20_000])) == {old.name}) is gone

    def test_can_stand_in_mask(self) -> None:
        """can_stand_in gives one boolean per row, true only for compatible rows."""
        rows = [cont(100, model_id=1), cont(200, ctx_size=CTX // 2), cont(300, quant_bits=4),
                cont(400), cont(500, abi=0)]  # fmt: skip
        index = index_of(*rows)
        new = cont(1000).header
        mask = can_stand_in(index.columns(), new, strict_quant=True)
        assert mask.dtype == np.bool_
        assert mask.tolist() == [False, False, False, True, True]
        assert can_stand_in(index.columns(), new, strict_quant=False).tolist() == [
            False, False, True, True, True]  # fmt: skip


class TestTextMismatch:
    def test_text_not_matching_name_supersedes_nothing(self) -> None:
        """A new file whose text does not hash to its name supersedes nothing."""
        old = cont(10_000)
        new = dataclasses.replace(cont(20_000), name=sha1_hex(b"other") + ".kv",
                                  sha=sha1_hex(b"other"))  # fmt: skip
        v = land(index_of(old, new), new, C[:20_000])
        assert v == NOTHING

    def test_text_shorter_than_header_says_supersedes_nothing(self) -> None:
        """A text shorter than N's text_bytes (changed under us) proves nothing."""
        old = cont(10_000)
        new = cont(20_000)
        v = land(index_of(old, new), new, C[:15_000])
        assert v == NOTHING

    def test_text_longer_than_header_uses_its_prefix(self) -> None:
        """Bytes past text_bytes (read too far) are ignored."""
        old = cont(10_000)
        new = cont(20_000)
        assert superseded(land(index_of(old, new), new, C[:25_000])) == {old.name}


def swept(snaps: list[Snapshot], texts: dict[str, bytes], *,
          strict_quant: bool = False) -> tuple[Groomer, list[Decision]]:  # fmt: skip
    """The core after a start-up sweep of `snaps`, and what it decided."""
    disk = MemDisk(snaps, texts)
    core = Groomer(Rules(strict_quant=strict_quant))
    return core, settle_all(core, indexed(core, disk), disk)


class TestSweep:
    """The daemon's full pass (start-up, reconcile), through the core."""

    def test_chain_reasons_only_and_longest_first(self) -> None:
        """Only continued files go; each names the longest file that supersedes
        it; agent and unknown entries are neither triggers nor candidates."""
        snaps = [
            cont(1000), cont(2000), snapshot(C[:5000], reason=Reason.COLD),
            snapshot(U[:3000], reason=Reason.EVICT), snapshot(U[:9000], reason=Reason.SHUTDOWN),
            snapshot(C[:7000], reason=Reason.AGENT_SESSION),
            snapshot(C[:8000], reason=Reason.AGENT_SYSTEM),
            snapshot(C[:6000], reason=Reason.UNKNOWN),
        ]  # fmt: skip
        texts = {s.name: (C if s.name != snaps[3].name and s.name != snaps[4].name else U)
                 [: s.header.text_bytes] for s in snaps}  # fmt: skip
        core, decided = swept(snaps, texts)
        assert [(d.name, d.fields["superseded_by"]) for d in decided] == [
            (cont(1000).name, snaps[2].sha), (cont(2000).name, snaps[2].sha)]
        assert len(core.index) == len(snaps) - 2

    def test_empty_index(self) -> None:
        """An empty directory has nothing to sweep."""
        assert swept([], {})[1] == []

    @pytest.mark.parametrize("strict", [False, True])
    def test_sweep_and_landing_find_the_same_prefixes(self, strict: bool) -> None:
        """The sweep's proven pairs are exactly what each file's own landing
        proves (one way to find supersession candidates)."""
        snaps = [cont(n) for n in (2000, 4000, 8000)] + [cont(n, U) for n in (3000, 6000)]
        snaps += [snapshot(C[:40], reason=Reason.CONTINUED), snapshot(U[:20], reason=Reason.COLD)]
        snaps += [snapshot(C[:9000], reason=Reason.COLD, model_id=1),
                  snapshot(C[:9500], reason=Reason.EVICT, quant_bits=4)]  # fmt: skip
        texts = {s.name: (U if s.name in {cont(3000, U).name, cont(6000, U).name,
                                          snaps[6].name} else C)[: s.header.text_bytes]
                 for s in snaps}  # fmt: skip
        disk = MemDisk(snaps, texts)
        core = Groomer(Rules(supersede=False, strict_quant=strict))
        indexed(core, disk)
        from kvgroomd.sim.groom import SimTexts  # noqa: PLC0415

        pairs_n, pairs_o = core.prefix_pairs(SimTexts(disk))
        names = core.index.names
        by_sweep = {(names[n], names[o]) for n, o in zip(pairs_n.tolist(), pairs_o.tolist(), strict=True)}
        by_landing = {(s.name, o) for s in snaps
                      for o in land(index_of(*snaps), s, texts[s.name],
                                    strict_quant=strict).covered}  # fmt: skip
        assert by_sweep == by_landing
        assert len(by_sweep) >= 8

    def test_sweeping_removes_every_redundant_continued(self) -> None:
        """A full sweep leaves one continued per chain, plus the intentional
        checkpoints."""
        snaps = [cont(n) for n in (2000, 4000, 8000)] + [cont(n, U) for n in (3000, 6000)]
        snaps += [snapshot(C[:1000], reason=Reason.COLD), snapshot(U[:7000], reason=Reason.EVICT)]
        texts = {s.name: (C if s.header.text_bytes in (1000, 2000, 4000, 8000) else U)
                 [: s.header.text_bytes] for s in snaps}  # fmt: skip
        core, _ = swept(snaps, texts)
        kept = sorted(core.index.get(n).header.text_bytes for n in core.index)  # type: ignore[union-attr]
        assert kept == [1000, 6000, 7000, 8000]


def keyed(s: Snapshot, text: bytes) -> Snapshot:
    """`s` with the text keys read_snapshot would give it (prefix.py)."""
    _head, bkey, _probes = text_keys(text[:AVAILABLE], len(text))
    return dataclasses.replace(s, tail=tail_of(text, len(text)), bkey=bkey)


def probes_of(index: Index, texts: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray]:
    rows, keys = [], []
    for name, text in texts.items():
        row = index.row_of(name)
        for k in text_keys(text[:AVAILABLE], len(text))[2].tolist():
            rows.append(row)
            keys.append(k)
    return np.array(rows, dtype=np.int32), np.array(keys, dtype=np.uint64)


class TestSweepByProbes:
    """The sweep's candidate join on prefix keys (sweep_pairs_flat) proves
    exactly the true pairs, though every text shares a head (real chats
    share a system prompt)."""

    def family(self, seed: int) -> tuple[list[Snapshot], dict[str, bytes]]:
        rng = random.Random(seed)
        shared = chat_text(700)  # one system prompt for every conversation
        snaps, texts = [], {}
        for c in range(12):
            conv = shared + chat_text(9000, seed=f"c{c}")
            for _ in range(rng.randrange(1, 6)):
                n = rng.choice([rng.randrange(1, 700), rng.randrange(700, 9700),
                                rng.randrange(4000, 4100), 700 + rng.randrange(0, 80)])
                reason = rng.choice(list(Reason))
                s = snapshot(conv[:n], reason=reason, ctx_size=rng.choice([CTX, 2 * CTX]),
                             model_id=rng.choice([0, 0, 1]), quant_bits=rng.choice([2, 4]))
                if s.name not in texts:
                    s = keyed(s, conv[:n])
                    snaps.append(s)
                    texts[s.name] = conv[:n]
        return snaps, texts

    @pytest.mark.parametrize("seed", range(6))
    @pytest.mark.parametrize("strict", [False, True])
    def test_proves_exactly_the_true_pairs(self, seed: int, strict: bool) -> None:
        """The join proves exactly the (N, O) pairs an oracle finds from the
        texts themselves, longest N first, though every text shares a head."""
        snaps, texts = self.family(seed)
        disk = MemDisk(snaps, texts)
        core = Groomer(Rules(supersede=False, strict_quant=strict))
        indexed(core, disk)
        from kvgroomd.sim.groom import SimTexts  # noqa: PLC0415

        pairs_n, pairs_o = core.prefix_pairs(SimTexts(disk))
        names = core.index.names
        got = {(names[n], names[o]) for n, o in zip(pairs_n.tolist(), pairs_o.tolist(), strict=True)}
        chain = {int(r) for r in CHAIN_REASONS}

        def stands_in(n: Snapshot, o: Snapshot) -> bool:
            hn, ho = n.header, o.header
            return (hn.model_id == ho.model_id and hn.ctx_size <= ho.ctx_size
                    and (not strict or hn.quant_bits == ho.quant_bits)
                    and hn.abi in (ABI_CURRENT, ho.abi))  # fmt: skip

        want = {(n.name, o.name) for n in snaps for o in snaps
                if int(n.header.reason) in chain and int(o.header.reason) in chain
                and len(texts[o.name]) < len(texts[n.name])
                and texts[n.name].startswith(texts[o.name]) and stands_in(n, o)}  # fmt: skip
        assert got == want
        lengths = [len(texts[names[n]]) for n in pairs_n.tolist()]
        assert lengths == sorted(lengths, reverse=True)

    def test_snapshots_without_keys_are_candidates_of_all(self) -> None:
        """A row put without its text keys (tail/bkey unknown) is never missed."""
        old, new = cont(3000), cont(9000)
        index = index_of(old, keyed(new, C[:9000]))
        n_rows, bounds, o_rows = sweep_pairs_flat(
            index, probes_of(index, {new.name: C[:9000]}), strict_quant=False)
        assert [index.name_at(int(r)) for r in n_rows] == [new.name]
        assert [index.name_at(int(r)) for r in o_rows] == [old.name]
        assert bounds.tolist() == [0, 1]

    def test_tail_filter_and_prefixes_of(self) -> None:
        """candidate_rows with the text drops candidates whose last bytes do
        not sit at their length in it; prefixes_of proves the rest by SHA-1."""
        shared = chat_text(2000)
        o_true = keyed(cont(1500, shared), shared[:1500])
        other = shared[:1400] + b"x" * 100  # same head, same length, other tail
        o_false = keyed(snapshot(other, reason=Reason.CONTINUED), other)
        new = keyed(cont(2000, shared), shared)
        index = index_of(o_true, o_false, new)
        row = index.row_of(new.name)
        assert row is not None
        rows = candidate_rows(index, row, shared, strict_quant=False)
        assert [index.name_at(int(r)) for r in rows] == [o_true.name]
        sha = bytes.fromhex
        shas = [sha(o_true.sha), sha(o_false.sha), sha(o_true.sha)]
        assert prefixes_of(shared, sha(new.sha), [1500, 1500, 3000], shas) == [True, False, False]
        assert prefixes_of(shared, sha(o_true.sha), [1500], [sha(o_true.sha)]) is None


class TestConstants:
    def test_triggers_are_cold_and_continued(self) -> None:
        """Only cold and continued arrivals trigger supersession."""
        assert frozenset({Reason.COLD, Reason.CONTINUED}) == TRIGGERS

    def test_chain_reasons_are_the_server_reasons(self) -> None:
        """Texts of cold, continued, evict and shutdown files take part in chains."""
        assert (
            frozenset({Reason.COLD, Reason.CONTINUED, Reason.EVICT, Reason.SHUTDOWN})
            == CHAIN_REASONS
        )


def test_old_file_age_uses_created_at() -> None:
    """age_s in a superseded decision is now - created_at, never negative."""
    old = cont(10_000, created_at=NOW + 50)
    new = cont(20_000)
    (d,) = land(index_of(old, new), new, C[:20_000]).superseded
    assert d.fields["age_s"] == 0
    old2 = cont(10_000, created_at=NOW - 2 * DAY)
    (d2,) = land(index_of(old2, new), new, C[:20_000]).superseded
    assert d2.fields["age_s"] == 2 * DAY
