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
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kvgroomd.core.index import BKEY_KNOWN, SHORT_HEAD, TAIL_KNOWN, Columns, Index
from kvgroomd.format.header import PREFIX_BYTES, Header, Reason
from kvgroomd.format.layouts import same_engine
from kvgroomd.format.prefix import FIRST_READ, TAIL_BYTES, tail_of, text_keys, windows

TRIGGERS = frozenset({Reason.COLD, Reason.CONTINUED})
_AVAILABLE = FIRST_READ - PREFIX_BYTES  # text bytes the first read holds (the keys' scope)
# Server-written reasons whose texts take part in prefix chains at all.
CHAIN_REASONS = frozenset({Reason.COLD, Reason.CONTINUED, Reason.EVICT, Reason.SHUTDOWN})


_IS_CHAIN = np.zeros(256, dtype=bool)  # reason code -> takes part in chains (no np.isin per event)
_IS_CHAIN[[int(r) for r in CHAIN_REASONS]] = True
_IS_TRIGGER = np.zeros(256, dtype=bool)  # reason code -> supersedes when it lands
_IS_TRIGGER[[int(r) for r in TRIGGERS]] = True


def can_stand_in(cols: Columns, new: Header, *, strict_quant: bool) -> npt.NDArray[np.bool_]:
    """Rows `new` can serve every lookup of (spec §4 step 3), as a mask.

    Same model; same quant when the engine rejects cross-quant reuse; a
    context no larger than theirs (a small-context server can load them but
    not `new`); and every engine that loads them loads `new`: the same
    layout family and payload ABI (format/layouts.same_engine; a legacy-ABI
    `new` is invisible to current engines, so it stands in only for other
    legacy files, while a current version-1 `new` also stands in for legacy
    ones), and a weights fingerprint of 0 or theirs.
    """
    return _compatible(cols, new.model_id, new.ctx_size, new.quant_bits, new.abi,
                       strict_quant=strict_quant, layout=new.layout,
                       model_fp=new.model_fp)  # fmt: skip


def _compatible(cols: Columns, model_id: int, ctx_size: int, quant_bits: int, abi: int, *,
                strict_quant: bool, layout: int,
                model_fp: int) -> npt.NDArray[np.bool_]:  # fmt: skip
    mask: npt.NDArray[np.bool_] = cols["ctx_size"] >= ctx_size
    if strict_quant:
        mask &= cols["quant_bits"] == quant_bits
    mask &= same_engine(n_layout=layout, n_abi=abi, n_model=model_id, n_fp=model_fp,
                        o_layout=cols["layout"], o_abi=cols["abi"], o_model=cols["model_id"],
                        o_fp=cols["model_fp"])  # fmt: skip
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
                      int(new["quant_bits"]), int(new["abi"]), strict_quant=strict_quant,
                      layout=int(new["layout"]), model_fp=int(new["model_fp"]))
    )  # fmt: skip
    return mask


def candidate_rows(index: Index, row: int, text: bytes, *,
                   strict_quant: bool) -> npt.NDArray[np.intp]:  # fmt: skip
    """Rows that may be strict prefixes of row `row`, whose text is `text`,
    and that it could stand in for (empty when it takes no part in chains).

    Only rows whose bkey is one of the text's probes (format/prefix.py)
    qualify, found by one search over the whole index; then the other
    conditions and the last bytes on those few. A 4096-slot table of the
    probes' top 12 bits (keys are fmix64 outputs, so those bits are uniform)
    filters the column in two passes; rows put without a bkey hold 0, whose
    slot is always set, and pass."""
    cols = index.columns()
    new = cols[row]
    if not _IS_CHAIN[new["reason"]]:
        return np.zeros(0, dtype=np.intp)
    probes = text_keys(text[:_AVAILABLE], len(text))[2]
    table = np.zeros(1 << 12, dtype=bool)
    table[(probes >> np.uint64(52)).astype(np.intp)] = True
    table[0] = True
    bkey = cols["bkey"]
    rows = np.flatnonzero(table[(bkey >> np.uint64(52)).astype(np.intp)])
    sub = cols[rows]
    exact = np.isin(sub["bkey"], probes) | ((sub["flags"] & BKEY_KNOWN) == 0)
    rows, sub = rows[exact], sub[exact]
    rows = rows[_candidate_mask(sub, new, strict_quant=strict_quant) & (rows != row)]
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


def superseding(cols: Columns, n_of: npt.NDArray[np.intp],
                o_of: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:  # fmt: skip
    """The rule itself, for proven pairs (N's text strictly extends O's and N
    can stand in for O): O goes when N is a cold or continued arrival and O is
    a continued file. Intentional checkpoints (cold, evict, shutdown), agent
    and unknown entries are never superseded, and an evict/shutdown arrival
    supersedes nothing: it saved a state that has just diverged."""
    mask: npt.NDArray[np.bool_] = (_IS_TRIGGER[cols["reason"][n_of]]
                                   & (cols["reason"][o_of] == int(Reason.CONTINUED)))  # fmt: skip
    return mask


# (index row, probe key) pairs; keys compare on their low 32 bits
Probes = tuple[npt.NDArray[np.integer[Any]], npt.NDArray[np.unsignedinteger[Any]]]
_LOW32 = np.uint64(0xFFFFFFFF)
_PROBE_SLICE = 1 << 18  # probes filtered at a time by sweep_pairs_flat


def prefixes_of(text: bytes, sha: bytes, lengths: Sequence[int],
                shas: Sequence[bytes]) -> list[bool] | None:
    """Which (length, sha) pairs name a prefix of `text`: SHA-1 of
    text[:length] == sha, in one incremental pass on raw digests. None when
    `text` itself does not hash to `sha` (the engine would never load it, so
    it proves nothing)."""
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


Rows = npt.NDArray[np.intp]
_MANY = 32  # candidates of one text from which `prove` checks their tails with numpy
_NO_TAIL = (1 << 64) - 1  # "tail unknown" in `prove` (a real tail of all 0xff is checked anyway)


def prove(cols: Columns, n_rows: Rows, bounds: Rows, o_rows: Rows,
          texts: Iterable[bytes | None]) -> npt.NDArray[np.bool_]:  # fmt: skip
    """Which candidate pairs (N = n_rows[i], O = o_rows[bounds[i]:bounds[i+1]])
    are true, by SHA-1: `texts` yields each N's text in order (None when it
    could not be had), and one incremental SHA-1 pass over it is checked
    against the SHA-1s the O rows hold (their names). A mask over o_rows.
    Only a few small objects live at a time (a sweep over 100,000 files once
    left ~5 MiB of Python's small-object arenas pinned)."""
    proven = np.zeros(len(o_rows), dtype=bool)
    o_len = cols["text_bytes"][o_rows]
    o_tail = np.where(cols["flags"][o_rows] & TAIL_KNOWN, cols["tail"][o_rows],
                      np.uint64(_NO_TAIL))  # fmt: skip
    o_sha = cols[o_rows].view(np.uint8).reshape(len(o_rows), cols.dtype.itemsize)[:, :20]
    n_sha = cols[n_rows].view(np.uint8).reshape(len(n_rows), cols.dtype.itemsize)[:, :20]
    n_len = cols["text_bytes"][n_rows].tolist()
    for i, read in enumerate(texts):
        if read is None:
            continue  # changed or gone; its own event follows
        # Bytes read past the text are not the text.
        text = read if len(read) <= n_len[i] else read[: n_len[i]]
        a, b = int(bounds[i]), int(bounds[i + 1])
        if b - a > _MANY:  # texts sharing a long prefix (a big system prompt): numpy
            lengths = o_len[a:b].astype(np.intp)
            ok = lengths <= len(text)
            win, tail = windows(text), o_tail[a:b]
            check = ok & (lengths >= TAIL_BYTES) & (tail != _NO_TAIL)
            if win is not None and check.any():
                ok[check] = win[lengths[check] - TAIL_BYTES] == tail[check]
            maybe = np.flatnonzero(ok).tolist()
            lengths = lengths.tolist()
        else:
            lengths, tails = o_len[a:b].tolist(), o_tail[a:b].tolist()
            maybe = [k for k in range(b - a) if lengths[k] <= len(text) and (
                tails[k] == _NO_TAIL or tail_of(text, lengths[k]) == tails[k])]  # fmt: skip
        if not maybe:
            continue
        found = prefixes_of(text, n_sha[i].tobytes(), [lengths[k] for k in maybe],
                            [o_sha[a + k].tobytes() for k in maybe])  # fmt: skip
        if found:
            for k, yes in zip(maybe, found, strict=True):
                proven[a + k] = yes
    return proven



def sweep_pairs_flat(index: Index, probes: Probes, *,
                     strict_quant: bool) -> tuple[Rows, Rows, Rows]:  # fmt: skip
    """Candidate pairs of a full pass, as flat arrays (no Python object per
    pair): N rows, longest first, and `o_rows[bounds[i]:bounds[i + 1]]` the
    candidates of `n_rows[i]`.

    `probes` (format/prefix.py) are, for each row, the keys of its text's
    leading blocks at every depth, as the bulk reader returns them: O is a
    candidate of N only if O's `bkey` is among N's probes, so the pass is one
    sort-and-search join, O(n log n) even when every text shares one system
    prompt. Longest N first: a continued file superseded by a longer one has
    only candidates the longer one also covers, so a pass can skip it once
    it is gone."""
    empty = np.zeros(0, dtype=np.intp)
    cols = index.columns()
    chain = _IS_CHAIN[cols["reason"]]
    keyed = (cols["flags"] & BKEY_KNOWN) != 0
    # O side: chain rows by bkey, sorted; N side: the probes of chain rows.
    o_rows = np.flatnonzero(chain & keyed)
    by_key = np.argsort(cols["bkey"][o_rows] & _LOW32, kind="stable")
    o_rows = o_rows[by_key]
    o_keys = (cols["bkey"][o_rows] & _LOW32).astype(np.uint32)
    # Most probes match no bkey: a 2**22-slot table of the bkeys' top bits
    # (uniform: they are hash outputs) drops them before any binary search.
    # In slices of the probes: their temporaries stay small (a start-up's
    # probes are ~20 MiB for 100,000 files).
    table = np.zeros(1 << 22, dtype=bool)
    table[o_keys >> np.uint32(10)] = True
    kept_rows, kept_keys = [], []
    for s in range(0, len(probes[0]), _PROBE_SLICE):
        rows_s = probes[0][s : s + _PROBE_SLICE]
        keys_s = (probes[1][s : s + _PROBE_SLICE] & 0xFFFFFFFF).astype(np.uint32, copy=False)
        on = table[keys_s >> np.uint32(10)]
        on[on] = chain[rows_s[on]]
        kept_rows.append(rows_s[on].astype(np.intp))
        kept_keys.append(keys_s[on])
    p_rows = np.concatenate(kept_rows) if kept_rows else empty
    p_keys = np.concatenate(kept_keys) if kept_keys else np.zeros(0, dtype=np.uint32)
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
    ok: npt.NDArray[np.bool_] = cols["ctx_size"][o_of] >= cols["ctx_size"][n_of]
    if strict_quant:
        ok &= cols["quant_bits"][o_of] == cols["quant_bits"][n_of]
    # Column by column: whole records of every pair would copy ~170 bytes a
    # pair (a start-up has hundreds of thousands of candidate pairs).
    layout, abi, model, fp = cols["layout"], cols["abi"], cols["model_id"], cols["model_fp"]
    ok &= same_engine(n_layout=layout[n_of], n_abi=abi[n_of], n_model=model[n_of],
                      n_fp=fp[n_of], o_layout=layout[o_of], o_abi=abi[o_of],
                      o_model=model[o_of], o_fp=fp[o_of])  # fmt: skip
    return ok
