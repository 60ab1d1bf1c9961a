"""Supersession (spec section 4): one snapshot per prefix chain.

Pure. When a `cold` or `continued` snapshot N lands, every `continued` O whose
text is a strict byte prefix of N's, and which N can stand in for, is
redundant: N wins every prefix lookup O could win. Intentional checkpoints
(cold, evict, shutdown), agent and unknown entries are never superseded, and an
`evict`/`shutdown` arrival supersedes nothing: it saves a state that has just
diverged, so the session's shorter continued files are the prefixes that serve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kvgroomd.decision import Cause, Decision
from kvgroomd.index import SHORT_HEAD, Columns, Index, Snapshot, decide
from kvgroomd.snapshot import ABI_CURRENT, Header, Reason, prefix_digests

TRIGGERS = frozenset({Reason.COLD, Reason.CONTINUED})
# Server-written reasons whose texts take part in prefix chains at all.
CHAIN_REASONS = frozenset({Reason.COLD, Reason.CONTINUED, Reason.EVICT, Reason.SHUTDOWN})


_CHAIN_CODES = [int(r) for r in CHAIN_REASONS]


def can_stand_in(cols: Columns, new: Header, *, strict_quant: bool) -> npt.NDArray[np.bool_]:
    """Rows `new` can serve every lookup of (spec §4 step 3), as a mask.

    Same model; same quant when the engine rejects cross-quant reuse; a
    context no larger than theirs (a small-context server can load them but
    not `new`). A legacy-ABI `new` is invisible to current engines, so it
    stands in only for other legacy files.
    """
    return _compatible(cols, new.model_id, new.ctx_size, new.quant_bits, new.abi,
                       strict_quant=strict_quant)  # fmt: skip


def _compatible(cols: Columns, model_id: int, ctx_size: int, quant_bits: int, abi: int,
                *, strict_quant: bool) -> npt.NDArray[np.bool_]:  # fmt: skip
    mask: npt.NDArray[np.bool_] = (cols["model_id"] == model_id) & (cols["ctx_size"] >= ctx_size)
    if strict_quant:
        mask &= cols["quant_bits"] == quant_bits
    if abi != ABI_CURRENT:
        mask &= cols["abi"] == abi
    return mask


def _candidate_mask(cols: Columns, new: np.void, *, strict_quant: bool) -> npt.NDArray[np.bool_]:
    """Rows that may be strict prefixes of the row `new`: shorter, of a chain
    reason, in its text-head bucket (or too short to have one), compatible."""
    heads = cols["head"]
    return (
        (cols["text_bytes"] < new["text_bytes"])
        & np.isin(cols["reason"], _CHAIN_CODES)
        & ((heads == new["head"]) | (heads == SHORT_HEAD))
        & _compatible(cols, int(new["model_id"]), int(new["ctx_size"]),
                      int(new["quant_bits"]), int(new["abi"]), strict_quant=strict_quant)
    )  # fmt: skip


def prefix_candidates(index: Index, new: Snapshot, *, strict_quant: bool) -> list[Snapshot]:
    """Indexed snapshots that could be strict prefixes of `new` and that it
    could stand in for. Empty when `new` takes no part in prefix chains."""
    row = index.row_of(new.name)
    if new.header.reason not in CHAIN_REASONS or row is None:
        return []
    cols = index.columns()
    mask = _candidate_mask(cols, cols[row], strict_quant=strict_quant)
    return [index.at(int(i)) for i in np.flatnonzero(mask)]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `new`'s text proves about the candidates."""

    text_matches_name: bool  # False: the engine would never use `new`
    covered: tuple[str, ...]  # names whose text `new` strictly extends
    superseded: tuple[Decision, ...]  # the continued ones among them, if `new` triggers


def judge(
    new: Snapshot, text: bytes, candidates: Sequence[Snapshot], *, now: float
) -> Verdict:
    """Check candidates against `new`'s text in one pass (incremental SHA-1)."""
    n = new.header.text_bytes
    digests = prefix_digests(text, [c.header.text_bytes for c in candidates] + [n])
    if len(text) < n or digests.get(n) != new.sha:
        return Verdict(text_matches_name=False, covered=(), superseded=())
    # Strict prefixes only (spec §4 step 2): never N itself, nor a same-text twin.
    covered = [
        c for c in candidates
        if c.header.text_bytes < n and c.name != new.name
        and digests.get(c.header.text_bytes) == c.sha
    ]  # fmt: skip
    triggers = new.header.reason in TRIGGERS
    by, tokens = new.sha, new.header.tokens
    superseded = tuple(
        decide(c, Cause.SUPERSEDED, now, superseded_by=by, superseded_by_tokens=tokens)
        for c in covered
        if triggers and c.header.reason is Reason.CONTINUED
    )
    return Verdict(True, tuple(c.name for c in covered), superseded)


def sweep_plan(
    index: Index, *, strict_quant: bool, tick: Callable[[], None] = lambda: None
) -> list[tuple[str, tuple[str, ...]]]:
    """For a full pass: each snapshot that has candidates, longest text first,
    with the names of its candidates, computed before anything is unlinked.

    `tick` is called every 64 rows: a bucket of many texts with the
    same head costs a scan per row, and the daemon must still be able to stop
    (it raises from `tick`) and feed systemd's watchdog meanwhile.

    Works bucket by bucket (same text head), so 100,000 unrelated snapshots
    cost one sort, not 100,000 scans of the index. Longest first: a continued
    file superseded by a longer one has only candidates the longer one also
    covers, so the pass can skip it once it is gone.
    """
    cols = index.columns()
    names = index.names
    chain = np.flatnonzero(np.isin(cols["reason"], _CHAIN_CODES))
    heads = cols["head"][chain]
    short = chain[heads == SHORT_HEAD]
    order = np.argsort(heads, kind="stable")
    rows, heads = chain[order], heads[order]
    plan: list[tuple[int, str, tuple[str, ...]]] = []
    done = 0
    for group in np.split(rows, np.flatnonzero(np.diff(heads)) + 1):
        if len(group) == 0:
            continue
        pool = group if cols["head"][group[0]] == SHORT_HEAD else np.concatenate([group, short])
        if len(pool) < 2:
            continue
        sub = cols[pool]
        for r in group:
            done += 1
            if done % 64 == 0:  # a row can cost ~ms: keep a stop well under 2 s
                tick()
            mask = _candidate_mask(sub, cols[r], strict_quant=strict_quant)
            if mask.any():
                found = tuple(names[int(p)] for p in pool[mask])
                plan.append((int(cols["text_bytes"][r]), names[int(r)], found))
    plan.sort(key=lambda item: -item[0])
    return [(name, found) for _, name, found in plan]
