"""Properties of the policies on random indexes: supersession removes exactly the
continued strict prefixes a compatible arrival can stand in for, a full sweep
leaves no such pair, and eviction never picks a protected entry and reaches its
target whenever the unprotected entries allow."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kvgroomd.core.decision import Cause
from kvgroomd.core.evict import Budget, choose
from kvgroomd.core.groomer import Groomer, Rules
from kvgroomd.core.index import Index, Snapshot
from kvgroomd.core.scoring import POLICIES, Clock
from kvgroomd.core.supersede import TRIGGERS
from kvgroomd.format.header import ABI_CURRENT, Reason
from kvgroomd.sim.groom import SimTexts, snapshot_of
from tests.unit.builders import T0, MemDisk, anon_name, index_of, indexed, settle_all, snapshot

Texts = dict[str, bytes]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Index, Texts, bool]:
    """Snapshots cut from a few conversations sharing a root, so prefixes abound;
    random reasons and compatibility fields; some names not the sha of their text."""
    root = draw(st.binary(max_size=90).map(lambda b: bytes(97 + x % 2 for x in b)))
    bases = draw(st.lists(st.binary(min_size=1, max_size=120), min_size=1, max_size=3))
    convs = [root + bytes(97 + x % 3 for x in b) for b in bases]
    snaps: dict[str, Snapshot] = {}
    texts: Texts = {}
    for _ in range(draw(st.integers(1, 14))):
        conv = draw(st.sampled_from(convs))
        text = conv[: draw(st.integers(1, len(conv)))]
        name = anon_name() if draw(st.integers(0, 9)) == 0 else None
        s = snapshot(
            text, name=name, reason=draw(st.sampled_from(list(Reason))),
            ctx_size=draw(st.sampled_from([16384, 32768, 65536])),
            model_id=draw(st.sampled_from([0, 0, 1])), quant_bits=draw(st.sampled_from([2, 4])),
            abi=draw(st.sampled_from([ABI_CURRENT, ABI_CURRENT, 0])),
        )  # fmt: skip
        snaps[s.name], texts[s.name] = s, text
    return index_of(*snaps.values(), capacity=16), texts, draw(st.booleans())


def sha1(b: bytes) -> str:
    return hashlib.sha1(b, usedforsecurity=False).hexdigest()


def may_supersede(o: Snapshot, n: Snapshot, texts: Texts, strict_quant: bool) -> bool:
    """Spec §4, from the texts themselves: may the arrival `n` remove `o`?"""
    to, tn = texts[o.name], texts[n.name]
    ho, hn = o.header, n.header
    return (
        hn.reason in TRIGGERS and ho.reason is Reason.CONTINUED and o.name != n.name
        and sha1(tn) == n.sha and sha1(to) == o.sha  # names that match their texts
        and len(to) < len(tn) and tn.startswith(to)
        and ho.model_id == hn.model_id and hn.ctx_size <= ho.ctx_size
        and (not strict_quant or ho.quant_bits == hn.quant_bits)
        and hn.abi in (ABI_CURRENT, ho.abi)
    )  # fmt: skip


def _snap(core_index: Index, name: str) -> Snapshot:
    s = core_index.get(name)
    assert s is not None
    return s


@given(worlds())
@settings(max_examples=300, deadline=None)
def test_an_arrival_supersedes_exactly_the_compatible_continued_strict_prefixes(world):
    """For every arrival, the core's decisions are exactly the spec's: never a
    non-prefix, an incompatible or a non-continued entry, and none missed."""
    index, texts, strict = world
    for name in index.names:
        n = _snap(index, name)
        others = [_snap(index, o) for o in index.names if o != name]
        disk = MemDisk([*others, n], texts)
        core = Groomer(Rules(supersede=False, strict_quant=strict))
        indexed(core, MemDisk(others, texts))
        core.reconfigure(Rules(supersede=True, strict_quant=strict))
        step = core.landed(snapshot_of(disk, name), SimTexts(disk), T0)  # type: ignore[arg-type]
        got = {d.name for d in step.decisions}
        want = {o.name for o in others if may_supersede(o, n, texts, strict)}
        assert got == want
        assert all(d.cause is Cause.SUPERSEDED for d in step.decisions)
        assert all(d.fields["superseded_by"] == n.sha for d in step.decisions)


@given(worlds())
@settings(max_examples=300, deadline=None)
def test_a_sweep_removes_only_supersedable_entries_and_leaves_no_such_pair(world):
    """A full sweep (the daemon's start-up and reconcile path) removes only
    entries supersedable by the file its decision names, and afterwards no
    entry is supersedable by another."""
    index, texts, strict = world
    snaps = {n: _snap(index, n) for n in index.names}
    disk = MemDisk(snaps.values(), texts)
    core = Groomer(Rules(supersede=True, strict_quant=strict))
    for d in settle_all(core, indexed(core, disk), disk):
        by = next(s for s in snaps.values() if s.sha == d.fields["superseded_by"])
        assert may_supersede(snaps[d.name], by, texts, strict)
    left = [snaps[x] for x in core.index.names]
    assert sorted(core.index.names) == sorted(disk.index.names)
    assert not [
        (o.name, n.name) for o in left for n in left if may_supersede(o, n, texts, strict)
    ]  # fmt: skip


@st.composite
def budgets(draw: st.DrawFn) -> tuple[Index, Budget, str]:
    """A random index, a limit anywhere from nothing to above its total, a policy."""
    snaps = []
    for _ in range(draw(st.integers(0, 40))):
        created = T0 - draw(st.integers(0, 3 * 86400))
        snaps.append(snapshot(
            reason=draw(st.sampled_from(list(Reason))), tokens=draw(st.integers(1, 120_000)),
            hits=draw(st.integers(0, 50)), created_at=created,
            last_used=created + draw(st.integers(0, T0 - created)),
            size=draw(st.integers(1, 10**9)), abi=draw(st.sampled_from([0, 2, 2])),
            covered=draw(st.booleans()),
        ))  # fmt: skip
    index = index_of(*snaps, capacity=16)
    total = index.total_bytes
    limit = draw(st.integers(0, total + total // 2 + 1))
    budget = Budget(limit, draw(st.floats(0.5, 1.0)), draw(st.sampled_from([0, 60, 3600])))
    return index, budget, draw(st.sampled_from(sorted(POLICIES)))


@given(budgets())
@settings(max_examples=200)
def test_eviction_spares_protected_entries_and_reaches_its_target_when_it_can(case):
    """Eviction never picks an agent or unknown-reason entry; it brings usage
    to the target whenever the other entries suffice (else takes them all),
    takes no more than needed, and takes the lowest-valued first (a young
    entry's value counted twice: core/evict.py)."""
    index, budget, policy = case
    cols = index.columns()
    total = int(cols["size"].sum())
    chosen = choose(index, budget, Clock(T0), POLICIES[policy])
    if total <= budget.limit:
        assert chosen == []
        return
    # Protected, by the README's rule: agent and unknown-reason entries.
    keep = [int(r) for r in (Reason.UNKNOWN, Reason.AGENT_SYSTEM, Reason.AGENT_SESSION)]
    guarded = np.isin(cols["reason"], keep)
    young = T0 - cols["created_at"] < budget.protect_new
    row = {name: i for i, name in enumerate(index.names)}
    picked = np.zeros(len(cols), dtype=bool)
    picked[[row[d.name] for d in chosen]] = True
    assert not (picked & guarded).any()
    freed = int(cols["size"][picked].sum())
    evictable = int(cols["size"][~guarded].sum())
    if total - evictable <= budget.target:
        assert total - freed <= budget.target
        assert total - (freed - chosen[-1].seen.size) > budget.target  # the last was needed
    else:
        assert picked.sum() == (~guarded).sum()
    values = POLICIES[policy].score(cols, Clock(T0))
    values = np.where(young, 2 * values, values)
    rest = ~picked & ~guarded
    if picked.any() and rest.any():
        assert values[picked].max() <= values[rest].min()
