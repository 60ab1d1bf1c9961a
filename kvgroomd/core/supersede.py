"""Supersession (spec section 4): one snapshot per prefix chain.

Pure. When a `cold` or `continued` snapshot N lands, every `continued` O whose
text is a strict byte prefix of N's, and which N can stand in for, is
redundant: N wins every prefix lookup O could win. Intentional checkpoints
(cold, evict, shutdown), agent and unknown entries are never superseded, and an
`evict`/`shutdown` arrival supersedes nothing: it saves a state that has just
diverged, so the session's shorter continued files are the prefixes that serve.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kvgroomd.core.decision import Cause, Decision
from kvgroomd.core.index import BKEY_KNOWN, SHORT_HEAD, TAIL_KNOWN, Columns, Index, Snapshot, decide
from kvgroomd.format.header import ABI_CURRENT, PREFIX_BYTES, Header, Reason, prefix_digests
from kvgroomd.format.prefix import FIRST_READ, TAIL_BYTES, tail_of, text_keys, windows

TRIGGERS = frozenset({Reason.COLD, Reason.CONTINUED})
_AVAILABLE = FIRST_READ - PREFIX_BYTES  # text bytes the first read holds (the keys' scope)
# Server-written reasons whose texts take part in prefix chains at all.
CHAIN_REASONS = frozenset({Reason.COLD, Reason.CONTINUED, Reason.EVICT, Reason.SHUTDOWN})


_CHAIN_CODES = [int(r) for r in CHAIN_REASONS]
_IS_CHAIN = np.zeros(256, dtype=bool)  # reason code -> takes part in chains (no np.isin per event)
_IS_CHAIN[_CHAIN_CODES] = True


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
    mask: npt.NDArray[np.bool_] = (
        (cols["text_bytes"] < new["text_bytes"])
        & _IS_CHAIN[cols["reason"]]
        & ((heads == new["head"]) | (heads == SHORT_HEAD))
        & _compatible(cols, int(new["model_id"]), int(new["ctx_size"]),
                      int(new["quant_bits"]), int(new["abi"]), strict_quant=strict_quant)
    )  # fmt: skip
    return mask


def candidate_rows(index: Index, new: Snapshot, *, strict_quant: bool,
                   text: bytes | None = None) -> npt.NDArray[np.intp]:  # fmt: skip
    """Rows of `prefix_candidates`, without building a Snapshot for each."""
    row = index.row_of(new.name)
    if new.header.reason not in CHAIN_REASONS or row is None:
        return np.zeros(0, dtype=np.intp)
    cols = index.columns()
    if text is None:
        return np.flatnonzero(_candidate_mask(cols, cols[row], strict_quant=strict_quant))
    # With the text: only rows whose bkey is one of its probes (prefix.py),
    # found by one search over the whole index, then the other conditions
    # and the tail on those few.
    # A 4096-slot table of the probes' top 12 bits (keys are fmix64 outputs,
    # so those bits are uniform) filters the column in two passes; rows put
    # without a bkey hold 0, whose slot is always set, and pass.
    probes = text_keys(text[:_AVAILABLE], len(text))[2]
    table = np.zeros(1 << 12, dtype=bool)
    table[(probes >> np.uint64(52)).astype(np.intp)] = True
    table[0] = True
    bkey = cols["bkey"]
    rows = np.flatnonzero(table[(bkey >> np.uint64(52)).astype(np.intp)])
    sub = cols[rows]
    exact = np.isin(sub["bkey"], probes) | ((sub["flags"] & BKEY_KNOWN) == 0)
    rows, sub = rows[exact], sub[exact]
    rows = rows[_candidate_mask(sub, cols[row], strict_quant=strict_quant)]
    out: npt.NDArray[np.intp] = rows[tail_matches(cols, rows, text)]
    return out


def tail_matches(cols: Columns, rows: npt.NDArray[np.intp], text: bytes) -> npt.NDArray[np.bool_]:
    """For each row: could its text be a prefix of `text`, by its last 8
    bytes? (True when its tail is unknown.) One gather over `text`."""
    length = cols["text_bytes"][rows].astype(np.intp)
    ok: npt.NDArray[np.bool_] = (cols["flags"][rows] & TAIL_KNOWN) == 0
    check = ~ok & (length <= len(text))
    win = windows(text)
    long = check & (length >= TAIL_BYTES)
    if win is not None and long.any():
        ok[long] = win[length[long] - TAIL_BYTES] == cols["tail"][rows[long]]
    for j in np.flatnonzero(check & (length < TAIL_BYTES)):  # tiny texts
        ok[j] = tail_of(text, int(length[j])) == int(cols["tail"][rows[j]])
    return ok


def prefix_candidates(index: Index, new: Snapshot, *, strict_quant: bool,
                      text: bytes | None = None) -> list[Snapshot]:  # fmt: skip
    """Indexed snapshots that could be strict prefixes of `new` and that it
    could stand in for. Empty when `new` takes no part in prefix chains.
    Given `new`'s text, candidates whose last bytes do not appear at their
    length in it are left out (they cannot be prefixes)."""
    return [index.at(int(i))
            for i in candidate_rows(index, new, strict_quant=strict_quant, text=text)]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `new`'s text proves about the candidates."""

    text_matches_name: bool  # False: the engine would never use `new`
    covered: tuple[str, ...]  # names whose text `new` strictly extends
    superseded: tuple[Decision, ...]  # the continued ones among them, if `new` triggers


def judge(
    new: Snapshot, text: bytes, candidates: Sequence[Snapshot], *, now: float
) -> Verdict:
    """Check candidates against `new`'s text in one pass (incremental SHA-1).

    A candidate whose known last bytes differ from `text` at its length
    cannot be a prefix: it costs no digest."""
    n = new.header.text_bytes
    candidates = [c for c in candidates if c.tail is None or c.header.text_bytes > len(text)
                  or tail_of(text, c.header.text_bytes) == c.tail]  # fmt: skip
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


# (index row, probe key) pairs; keys compare on their low 32 bits
Probes = tuple[npt.NDArray[np.integer[Any]], npt.NDArray[np.unsignedinteger[Any]]]
_LOW32 = np.uint64(0xFFFFFFFF)


def prefixes_of(text: bytes, sha: bytes, lengths: Sequence[int],
                shas: Sequence[bytes]) -> list[bool] | None:
    """Which (length, sha) pairs name a prefix of `text`: SHA-1 of
    text[:length] == sha, in one incremental pass (like `judge`, on raw
    digests). None when `text` itself does not hash to `sha` (the engine
    would never load it, so it proves nothing)."""
    running = hashlib.sha1(usedforsecurity=False)
    view = memoryview(text)
    out = [False] * len(lengths)
    done = 0
    digest = running.digest()
    for j in sorted(range(len(lengths)), key=lengths.__getitem__):
        n = lengths[j]
        if n > len(text):
            break  # the rest are longer still
        if n != done:
            running.update(view[done:n])
            done = n
            digest = running.copy().digest()
        out[j] = digest == shas[j]
    running.update(view[done:])
    return out if running.digest() == sha else None


def sweep_plan(
    index: Index, *, strict_quant: bool, probes: Probes | None = None,
    tick: Callable[[], None] = lambda: None,
) -> list[tuple[str, tuple[str, ...]]]:  # fmt: skip
    """For a full pass: each snapshot that has candidates, longest text first,
    with the names of its candidates, computed before anything is unlinked.

    Longest first: a continued file superseded by a longer one has only
    candidates the longer one also covers, so the pass can skip it once it is
    gone.

    With `probes` (prefix.py: for each row, the keys of its text's leading
    blocks at every depth, as `read.read_many` returns them) candidates come
    from one sort-and-search join: O is a candidate of N only if O's `bkey`
    is among N's probes, so the pass costs O(n log n) even when every text
    shares one system prompt. Without them (no text at hand), it works
    bucket by bucket (same text head), which is quadratic within a bucket.
    `tick` is called every few hundred rows (it may raise to stop).
    """
    if probes is not None:
        names = index.names
        return [(names[n], tuple(names[o] for o in olds))
                for n, olds in sweep_pairs(index, probes, strict_quant=strict_quant)]  # fmt: skip
    cols = index.columns()
    names = index.names
    chain = np.flatnonzero(_IS_CHAIN[cols["reason"]])
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


def sweep_pairs(index: Index, probes: Probes, *,
                strict_quant: bool) -> list[tuple[int, npt.NDArray[np.intp]]]:  # fmt: skip
    """`sweep_plan` with `probes`, as row numbers: (N row, its candidate rows),
    longest N first. Valid until the index changes."""
    n_rows, bounds, o_rows = sweep_pairs_flat(index, probes, strict_quant=strict_quant)
    return [(int(n), o_rows[bounds[i] : bounds[i + 1]]) for i, n in enumerate(n_rows)]


Rows = npt.NDArray[np.intp]


def sweep_pairs_flat(index: Index, probes: Probes, *,
                     strict_quant: bool) -> tuple[Rows, Rows, Rows]:  # fmt: skip
    """`sweep_pairs` as flat arrays (no Python object per pair): N rows,
    longest first, and `o_rows[bounds[i]:bounds[i + 1]]` the candidates of
    `n_rows[i]`."""
    empty = np.zeros(0, dtype=np.intp)
    cols = index.columns()
    chain = _IS_CHAIN[cols["reason"]]
    keyed = (cols["flags"] & BKEY_KNOWN) != 0
    # O side: chain rows by bkey, sorted; N side: the probes of chain rows.
    o_rows = np.flatnonzero(chain & keyed)
    by_key = np.argsort(cols["bkey"][o_rows] & _LOW32, kind="stable")
    o_rows = o_rows[by_key]
    o_keys = (cols["bkey"][o_rows] & _LOW32).astype(np.uint32)
    p_rows, p_keys = probes
    # Most probes match no bkey: a 2**22-slot table of the bkeys' top bits
    # (uniform: they are hash outputs) drops them before any binary search.
    p_keys = (p_keys & 0xFFFFFFFF).astype(np.uint32, copy=False)
    table = np.zeros(1 << 22, dtype=bool)
    table[o_keys >> np.uint32(10)] = True
    on = table[p_keys >> np.uint32(10)]
    on[on] = chain[p_rows[on]]
    p_rows, p_keys = p_rows[on].astype(np.intp), p_keys[on]
    lo = np.searchsorted(o_keys, p_keys, side="left")
    count = np.searchsorted(o_keys, p_keys, side="right") - lo
    hit = count > 0
    p_rows, lo, count = p_rows[hit], lo[hit], count[hit]
    n_of = np.repeat(p_rows, count)
    first = np.repeat(lo - (np.cumsum(count) - count), count)
    o_of = o_rows[first + np.arange(len(n_of))]
    # Rows without a bkey (built without their text) are candidates of every N.
    loose = np.flatnonzero(chain & ~keyed)
    if len(loose):
        n_all = np.flatnonzero(chain)
        n_of = np.concatenate((n_of, np.repeat(n_all, len(loose))))
        o_of = np.concatenate((o_of, np.tile(loose, len(n_all))))
    tb = cols["text_bytes"]
    same_head = (cols["head"][o_of] == cols["head"][n_of]) | (cols["head"][o_of] == SHORT_HEAD)
    keep = (tb[o_of] < tb[n_of]) & (o_of != n_of) & same_head & _compatible_pairs(
        cols, n_of, o_of, strict_quant=strict_quant)
    n_of, o_of = n_of[keep], o_of[keep]
    if not len(n_of):
        return empty, np.zeros(1, dtype=np.intp), empty
    # Longest N first (ties by row, as a stable order), then its candidates by row.
    order = np.lexsort((o_of, n_of, -tb[n_of].astype(np.int64)))
    n_of, o_of = n_of[order], o_of[order]
    o_of_unique = np.ones(len(n_of), dtype=bool)
    o_of_unique[1:] = (n_of[1:] != n_of[:-1]) | (o_of[1:] != o_of[:-1])
    n_of, o_of = n_of[o_of_unique], o_of[o_of_unique]
    starts = np.flatnonzero(np.r_[True, n_of[1:] != n_of[:-1]])
    return n_of[starts].astype(np.intp), np.r_[starts, len(n_of)].astype(np.intp), o_of


def _compatible_pairs(cols: Columns, n_of: npt.NDArray[np.intp], o_of: npt.NDArray[np.intp], *,
                      strict_quant: bool) -> npt.NDArray[np.bool_]:  # fmt: skip
    """`_compatible` for pairs: row n_of[i] can stand in for row o_of[i]."""
    ok: npt.NDArray[np.bool_] = ((cols["model_id"][o_of] == cols["model_id"][n_of])
                                 & (cols["ctx_size"][o_of] >= cols["ctx_size"][n_of]))  # fmt: skip
    if strict_quant:
        ok &= cols["quant_bits"][o_of] == cols["quant_bits"][n_of]
    n_abi = cols["abi"][n_of]
    ok &= (n_abi == ABI_CURRENT) | (cols["abi"][o_of] == n_abi)
    return ok
