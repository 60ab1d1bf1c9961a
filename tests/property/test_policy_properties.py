"""Properties of the policies on random indexes: supersession removes exactly the
continued strict prefixes a compatible arrival can stand in for, a full sweep
leaves no such pair, and eviction never picks a protected entry and reaches its
target whenever the unprotected entries allow."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kvgroomd.core.evict import Budget, choose
from kvgroomd.core.index import Index, Snapshot
from kvgroomd.core.scoring import POLICIES
from kvgroomd.core.supersede import TRIGGERS, judge, prefix_candidates, sweep_plan
from kvgroomd.format.header import ABI_CURRENT, Reason
from tests.unit.builders import T0, anon_name, index_of, snapshot

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


@given(worlds())
@settings(max_examples=300)
def test_an_arrival_supersedes_exactly_the_compatible_continued_strict_prefixes(world):
    """For every arrival, the unlinks judged are exactly the spec's: never a
    non-prefix, an incompatible or a non-continued entry, and none missed."""
    index, texts, strict = world
    for name in index.names:
        n = index.get(name)
        assert n is not None
        candidates = prefix_candidates(index, n, strict_quant=strict)
        verdict = judge(n, texts[name], candidates, now=T0)
        got = {d.name for d in verdict.superseded}
        want = {o for o in index.names if may_supersede(index.get(o), n, texts, strict)}  # type: ignore[arg-type]
        assert got == want
        assert all(d.fields["superseded_by"] == n.sha for d in verdict.superseded)


@given(worlds())
@settings(max_examples=300)
def test_a_sweep_removes_only_supersedable_entries_and_leaves_no_such_pair(world):
    """A full sweep (as at start-up) removes only entries supersedable at that
    moment, and afterwards no entry is supersedable by another."""
    index, texts, strict = world
    for name, cand_names in sweep_plan(index, strict_quant=strict):
        n = index.get(name)
        if n is None:
            continue  # removed earlier in the pass
        candidates = [c for c in map(index.get, cand_names) if c is not None]
        for d in judge(n, texts[name], candidates, now=T0).superseded:
            assert may_supersede(index.get(d.name), n, texts, strict)  # type: ignore[arg-type]
            index.pop(d.name)
    left = [index.get(x) for x in index.names]
    assert not [
        (o.name, n.name) for o in left for n in left  # type: ignore[union-attr]
        if may_supersede(o, n, texts, strict)  # type: ignore[arg-type]
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
    """Eviction never picks an agent, unknown-reason or young entry; it brings usage
    to the target whenever the unprotected entries suffice (else takes them all),
    takes no more than needed, and takes the lowest-valued first."""
    index, budget, policy = case
    cols = index.columns()
    total = int(cols["size"].sum())
    chosen = choose(index, budget, T0, POLICIES[policy])
    if total <= budget.limit:
        assert chosen == []
        return
    # Protected, by the README's rule: agent and unknown-reason entries, and young ones.
    keep = [int(r) for r in (Reason.UNKNOWN, Reason.AGENT_SYSTEM, Reason.AGENT_SESSION)]
    guarded = np.isin(cols["reason"], keep) | (T0 - cols["created_at"] < budget.protect_new)
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
    values = POLICIES[policy].score(cols, T0)
    rest = ~picked & ~guarded
    if picked.any() and rest.any():
        assert values[picked].max() <= values[rest].min()
