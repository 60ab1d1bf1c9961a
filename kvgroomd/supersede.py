"""Supersession (spec section 4): one snapshot per prefix chain.

Pure. When a `cold` or `continued` snapshot N lands, every `continued` O whose
text is a strict byte prefix of N's, and which N can stand in for, is
redundant: N wins every prefix lookup O could win. Intentional checkpoints
(cold, evict, shutdown), agent and unknown entries are never superseded, and an
`evict`/`shutdown` arrival supersedes nothing: it saves a state that has just
diverged, so the session's shorter continued files are the prefixes that serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kvgroomd.decision import Cause, Decision
from kvgroomd.index import SHORT_HEAD, Columns, Index, Snapshot
from kvgroomd.snapshot import ABI_CURRENT, Header, Reason, prefix_digests

TRIGGERS = frozenset({Reason.COLD, Reason.CONTINUED})
# Server-written reasons whose texts take part in prefix chains at all.
CHAIN_REASONS = frozenset({Reason.COLD, Reason.CONTINUED, Reason.EVICT, Reason.SHUTDOWN})


def can_stand_in(cols: Columns, new: Header, *, strict_quant: bool) -> np.ndarray:
    """Rows `new` can serve every lookup of (spec §4 step 3), as a mask.

    Same model; same quant when the engine rejects cross-quant reuse; a
    context no larger than theirs (a small-context server can load them but
    not `new`). A legacy-ABI `new` is invisible to current engines, so it
    stands in only for other legacy files.
    """
    mask = (cols["model_id"] == new.model_id) & (cols["ctx_size"] >= new.ctx_size)
    if strict_quant:
        mask &= cols["quant_bits"] == new.quant_bits
    if new.abi != ABI_CURRENT:
        mask &= cols["abi"] == new.abi
    return mask


def prefix_candidates(
    index: Index, new: Snapshot, *, strict_quant: bool
) -> list[Snapshot]:
    """Indexed snapshots that could be strict prefixes of `new` and that it
    could stand in for: shorter, compatible, same text head. Empty when `new`
    takes no part in prefix chains."""
    if new.header.reason not in CHAIN_REASONS or len(index) == 0:
        return []
    cols = index.columns()
    heads = cols["head"]
    mask = (
        (cols["text_bytes"] < new.header.text_bytes)
        & np.isin(cols["reason"], [int(r) for r in CHAIN_REASONS])
        & ((heads == new.head) | (heads == SHORT_HEAD))
        & can_stand_in(cols, new.header, strict_quant=strict_quant)
    )
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
    superseded = tuple(
        Decision(
            c.name,
            Cause.SUPERSEDED,
            c.seen,
            {
                "sha": c.sha,
                "reason": c.header.reason.label,
                "tokens": c.header.tokens,
                "hits": c.header.hits,
                "size": c.size,
                "age_s": max(0, round(now - c.header.created_at)),
                "superseded_by": new.sha,
                "superseded_by_tokens": new.header.tokens,
            },
        )
        for c in covered
        if triggers and c.header.reason is Reason.CONTINUED
    )
    return Verdict(True, tuple(c.name for c in covered), superseded)


def sweep_order(index: Index) -> list[str]:
    """Names to check as a potential N in a full pass, longest text first.

    Longest first: a continued file superseded by a longer one has only
    candidates the longer one also covers, so the pass can skip it once gone.
    """
    cols = index.columns()
    rows = np.flatnonzero(np.isin(cols["reason"], [int(r) for r in CHAIN_REASONS]))
    order = rows[np.argsort(-cols["text_bytes"][rows].astype(np.int64), kind="stable")]
    names = index.names
    return [names[int(i)] for i in order]
