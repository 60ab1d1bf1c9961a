"""The index: what kvgroomd believes is in the cache directory.

Pure. A cache of the directory that can always be rebuilt from a scan (the
engine itself re-reads every header on each store; ccache and friends shipped
counter-drift bugs by never rebuilding). Rows live in one numpy structured
array so that policies score 100,000 snapshots in one vectorised pass and an
entry costs a few hundred bytes, not a Python object graph.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from kvgroomd.core.decision import Cause, Decision, Fingerprint
from kvgroomd.format.header import MAGIC, VERSION, Header, Reason
from kvgroomd.format.prefix import HEAD_BYTES, SHORT_HEAD, text_keys

__all__ = ["HEAD_BYTES", "ROW", "SHORT_HEAD", "Change", "Columns", "Drift", "Index",
           "Snapshot", "decide", "drift", "head_key"]  # fmt: skip

# Rows carry each file's SHA-1 (which is its name), so the index keeps no
# Python object per entry: a name is rebuilt from its row when asked for, and
# names are found through an open-addressing hash table of row numbers keyed
# by the SHA-1. About 140 bytes an entry, against ~500 for a dict of names
# plus a list of names.
ROW = np.dtype(
    [
        # The SHA-1 of the name in three pieces, so bytes 0..19 of a row are
        # the SHA-1 and the two u64 pieces give the table key (`_tkey`).
        ("sha_hi", "<u8"),  # bytes 0..7, little-endian
        ("sha_mid", "V4"),  # bytes 8..11
        ("sha_lo", "<u8"),  # bytes 12..19, little-endian
        ("dev", "u8"),
        ("ino", "u8"),
        ("size", "i8"),  # st_size, as the engine counts it
        ("mtime_ns", "i8"),
        ("created_at", "u8"),  # u64 in the header: any value must fit
        ("last_used", "u8"),
        ("payload_bytes", "u8"),
        ("head", "u8"),  # prefix.py: first 64 text bytes, a bucket
        ("tail", "u8"),  # prefix.py: last 8 text bytes
        ("bkey", "u8"),  # prefix.py: key of the text's whole leading blocks
        ("tokens", "u4"),
        ("hits", "u4"),
        ("ctx_size", "u4"),
        ("text_bytes", "u4"),
        ("reason", "u1"),
        ("reason_code", "i2"),
        ("quant_bits", "u1"),
        ("model_id", "u1"),
        ("abi", "u1"),
        ("ext_flags", "u1"),
        # Text is a strict prefix of a compatible longer snapshot that still
        # exists (as last seen): it serves only prompts diverging in between.
        ("covered", "?"),
        ("flags", "u1"),  # TAIL_KNOWN | BKEY_KNOWN | ODD_NAME
    ]
)
Columns = npt.NDArray[np.void]  # a view of ROW records, one per snapshot
TAIL_KNOWN = 1
BKEY_KNOWN = 2
ODD_NAME = 4  # the file name is not "<lowercase SHA-1 hex>.kv": kept aside
_REASONS = tuple(Reason)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One indexed snapshot: its name, header, file identity and text keys.

    `tail` and `bkey` (prefix.py) are None when not known (a Snapshot built
    without its text); such a snapshot is a candidate for every longer one.
    """

    name: str
    sha: str
    header: Header
    seen: Fingerprint
    head: int = SHORT_HEAD
    covered: bool = False
    tail: int | None = None
    bkey: int | None = None

    @property
    def size(self) -> int:
        """Bytes on disk (st_size), what budgets count."""
        return self.seen.size


def decide(s: Snapshot, cause: Cause, now: float, **extra: Any) -> Decision:
    """A decision to unlink `s`, with the facts every unlink log line reports."""
    h = s.header
    fields = {
        "sha": s.sha, "reason": h.reason.label, "tokens": h.tokens, "hits": h.hits,
        "size": s.size, "age_s": max(0, round(now - h.created_at)), **extra,
    }  # fmt: skip
    return Decision(s.name, cause, s.seen, fields, header=h.pack())


def head_key(text_head: bytes, text_bytes: int) -> int:
    """Bucket key of a text from its first HEAD_BYTES bytes (0: too short)."""
    if text_bytes < HEAD_BYTES or len(text_head) < HEAD_BYTES:
        return SHORT_HEAD
    head, _bkey, _probes = text_keys(text_head[:HEAD_BYTES], text_bytes)
    return head


class Change(Enum):
    """What `Index.put` did."""

    ADDED = "added"
    UPDATED = "updated"  # same file, header or size rewritten in place
    REPLACED = "replaced"  # same name, another inode (engine rename/replace)
    UNCHANGED = "unchanged"


def sha_of(name: str) -> bytes | None:
    """The 20 SHA-1 bytes a `<40 hex>.kv` name carries (either case), else None."""
    if len(name) != 43 or not name.endswith(".kv"):
        return None
    try:
        sha = bytes.fromhex(name[:40])
    except ValueError:
        return None
    return sha if len(sha) == 20 else None  # fromhex skips whitespace


def _canonical(name: str) -> bool:
    """No upper-case hex: the name is "<sha>.kv" rebuilt from the row."""
    return name == name.lower()


def _to_row(s: Snapshot, sha: bytes) -> tuple[object, ...]:
    h = s.header
    flags = ((TAIL_KNOWN if s.tail is not None else 0) | (BKEY_KNOWN if s.bkey is not None else 0)
             | (0 if _canonical(s.name) else ODD_NAME))  # fmt: skip
    return (
        int.from_bytes(sha[:8], "little"), sha[8:12], int.from_bytes(sha[12:], "little"),
        s.seen.dev, s.seen.ino, s.seen.size,
        s.seen.mtime_ns, h.created_at, h.last_used, h.payload_bytes, s.head, s.tail or 0,
        s.bkey or 0, h.tokens, h.hits, h.ctx_size, h.text_bytes, int(h.reason), h.reason_code,
        h.quant_bits, h.model_id, h.abi, h.ext_flags, s.covered, flags,
    )  # fmt: skip


def _from_row(name: str, values: tuple[Any, ...]) -> Snapshot:
    (_hi, _mid, _lo, dev, ino, size, mtime_ns, created_at, last_used, payload_bytes, head, tail,
     bkey, tokens, hits, ctx_size, text_bytes, reason, reason_code, quant_bits, model_id, abi,
     ext_flags, covered, flags) = values  # fmt: skip
    header = Header(quant_bits, _REASONS[reason], ext_flags, model_id, tokens, hits, ctx_size,
                    abi, created_at, last_used, payload_bytes, text_bytes, reason_code)  # fmt: skip
    return Snapshot(name, name[:40].lower(), header, Fingerprint(dev, ino, size, mtime_ns), head,
                    covered, tail if flags & TAIL_KNOWN else None,
                    bkey if flags & BKEY_KNOWN else None)  # fmt: skip


_LABELS = {int(r): r.label for r in Reason}
_HEADER = struct.Struct("<3sBBBBBIIIB3xQQQI")  # snapshot.py's layout (spec §2)


def decide_rows(index: Index, rows: npt.NDArray[np.intp], cause: Cause, now: float,
                **extra: Any) -> list[Decision]:  # fmt: skip
    """`decide(index.at(r), cause, now, ...)` for each row, without building
    Snapshot objects (a budget pass may choose thousands). An `extra` value
    that is an array gives one value per row."""
    names = index.names_at(rows)
    sub = index.columns()[rows]
    col = {f: sub[f].tolist() for f in (
        "dev", "ino", "size", "mtime_ns", "created_at", "last_used", "payload_bytes", "tokens",
        "hits", "ctx_size", "text_bytes", "reason", "reason_code", "quant_bits", "model_id",
        "abi", "ext_flags")}  # fmt: skip
    per_row = [(k, v.tolist()) for k, v in extra.items() if isinstance(v, np.ndarray)]
    fixed = {k: v for k, v in extra.items() if not isinstance(v, np.ndarray)}
    labels, pack, magic, version = _LABELS, _HEADER.pack, MAGIC, VERSION
    out = []
    rows_values = zip(names, *col.values(), strict=True)
    for j, (name, dev, ino, size, mtime_ns, created, last, payload, tokens, hits, ctx, text,
            reason, code, quant, model, abi, ext) in enumerate(rows_values):  # fmt: skip
        fields = {"sha": name[:40].lower(), "reason": labels[reason], "tokens": tokens,
                  "hits": hits, "size": size, "age_s": max(0, round(now - created)), **fixed}
        for k, v in per_row:
            fields[k] = v[j]
        header = pack(magic, version, quant, code if code >= 0 else reason, ext, model, tokens,
                      hits, ctx, abi, created, last, payload, text)  # fmt: skip
        out.append(Decision(name, cause, Fingerprint(dev, ino, size, mtime_ns), fields,
                            header=header))  # fmt: skip
    return out


def snapshot_of(name: str, record: np.void) -> Snapshot:
    """The Snapshot a `ROW` record describes, under file name `name`."""
    return _from_row(name, cast("tuple[Any, ...]", record.item()))


# Many names at once travel as a NAME array (43 ASCII bytes each), not as a
# list of str: 100,000 str objects at once fragment Python's small-object
# arenas for good (~12 MiB kept after a start-up, measured).
NAME = np.dtype("S43")
_NIBBLE = np.full(256, 255, dtype=np.uint8)  # ASCII hex digit -> value, 255 otherwise
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i
_HEXDIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def names_array(names: Sequence[str] | npt.NDArray[np.bytes_]) -> npt.NDArray[np.bytes_]:
    """`names` as a NAME array (names that are not 43 ASCII characters become
    b"", which no lookup matches)."""
    if isinstance(names, np.ndarray):
        return names.astype(NAME, copy=False)
    return np.array([n.encode() if len(n) == 43 and n.isascii() else b"" for n in names],
                    dtype=NAME)  # fmt: skip


def parse_names(names: npt.NDArray[np.bytes_]) -> tuple[npt.NDArray[np.void], npt.NDArray[np.bool_],
                                                        npt.NDArray[np.bool_]]:  # fmt: skip
    """(SHA_FIELDS records, is `<40 hex>.kv`, has upper-case hex) of each name,
    without a Python object per name."""
    raw = np.frombuffer(names.tobytes(), dtype=np.uint8).reshape(len(names), 43)
    nib = _NIBBLE[raw[:, :40]]
    ok = (nib != 255).all(axis=1) & (raw[:, 40:] == np.frombuffer(b".kv", np.uint8)).all(axis=1)
    upper = ((raw[:, :40] >= ord("A")) & (raw[:, :40] <= ord("F"))).any(axis=1)
    sha = (nib[:, 0::2] << 4) | nib[:, 1::2]
    fields: npt.NDArray[np.void] = np.ascontiguousarray(sha).view(SHA_FIELDS).reshape(len(names))
    return fields, np.asarray(ok, dtype=bool), np.asarray(upper, dtype=bool)


_GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
SHA_FIELDS = np.dtype([("sha_hi", "<u8"), ("sha_mid", "V4"), ("sha_lo", "<u8")])  # 20 bytes


def _table_size(n: int) -> int:
    """Slots for `n` entries at a load of at most 1/2 (a power of two)."""
    return 1 << max(4, (2 * n - 1).bit_length())


class Index:
    """Snapshots by file name, stored as rows of `ROW` (swap-remove on delete)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._rows: npt.NDArray[np.void] = np.zeros(max(capacity, 16), dtype=ROW)
        self._fields()
        self._n = 0
        # Open addressing, linear probing: row + 1 per slot, 0 = empty.
        self._table(_table_size(max(capacity, 16)))
        self._odd: dict[int, str] = {}  # row -> name, for names not in canonical form
        # Kept in step by put/pop: every event reports usage, and summing
        # 100,000 rows per event would make a start-up scan quadratic.
        self._bytes = 0
        self.generation = 0  # bumped by every add, replace and removal

    def __len__(self) -> int:
        return self._n

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name)[1] >= 0

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    @property
    def names(self) -> list[str]:
        """Row order: `names[i]` is the file of `columns()[i]`. Built on each
        call (O(n)): take it once per pass, or use `name_at`."""
        n = self._n
        raw = self._rows[:n].view(np.uint8).reshape(n, ROW.itemsize)[:, :20]
        hexes = raw.tobytes().hex()
        names = [hexes[i : i + 40] + ".kv" for i in range(0, 40 * n, 40)]
        for row, name in self._odd.items():
            names[row] = name
        return names

    def names_array(self, rows: npt.NDArray[np.intp] | None = None) -> npt.NDArray[np.bytes_]:
        """The file names of `rows` (all rows by default) as a NAME array."""
        sha = self._rows[: self._n].view(np.uint8).reshape(self._n, ROW.itemsize)[:, :20]
        if rows is not None:
            sha = sha[rows]
        text = np.empty((len(sha), 43), dtype=np.uint8)
        text[:, 0:40:2] = _HEXDIGITS[sha >> 4]
        text[:, 1:40:2] = _HEXDIGITS[sha & 15]
        text[:, 40:] = np.frombuffer(b".kv", dtype=np.uint8)
        out = text.view(NAME).reshape(len(sha))
        if self._odd:
            where = np.arange(self._n) if rows is None else rows
            for j, r in enumerate(where.tolist()):
                odd = self._odd.get(r)
                if odd is not None:
                    out[j] = odd.encode()
        return out

    def names_at(self, rows: npt.NDArray[np.intp]) -> list[str]:
        """The file names of `rows`, in that order."""
        raw = self._rows[: self._n].view(np.uint8).reshape(self._n, ROW.itemsize)[rows, :20]
        hexes = raw.tobytes().hex()
        names = [hexes[i : i + 40] + ".kv" for i in range(0, 40 * len(rows), 40)]
        if self._odd:
            for j, r in enumerate(rows.tolist()):
                odd = self._odd.get(r)
                if odd is not None:
                    names[j] = odd
        return names

    def name_at(self, row: int) -> str:
        """The file name of row `row`."""
        odd = self._odd.get(row)
        if odd is not None:
            return odd
        return self._rows[row : row + 1].view(np.uint8)[:20].tobytes().hex() + ".kv"

    def columns(self) -> Columns:
        """A view of the live rows, for vectorised policies. Valid until a change."""
        return self._rows[: self._n]

    @property
    def total_bytes(self) -> int:
        """Sum of st_size over indexed snapshots."""
        return self._bytes

    def row_of(self, name: str) -> int | None:
        """Row number of `name`, or None."""
        r = self._find(name)[1]
        return None if r < 0 else r

    def get(self, name: str) -> Snapshot | None:
        """The snapshot indexed under `name`, or None."""
        r = self._find(name)[1]
        return None if r < 0 else _from_row(name, self._rows[r].item())

    def at(self, row: int) -> Snapshot:
        """The snapshot in row `row`."""
        if not 0 <= row < self._n:
            raise IndexError(row)
        return _from_row(self.name_at(row), self._rows[row].item())

    def fingerprint(self, name: str) -> Fingerprint | None:
        """The file identity last seen for `name` (cheaper than `get`)."""
        r = self._find(name)[1]
        if r < 0:
            return None
        v = self._rows[r].item()
        return Fingerprint(v[3], v[4], v[5], v[6])

    # -- the hash table -------------------------------------------------------

    def _table(self, size: int) -> None:
        """A new, empty table of `size` slots (a power of two)."""
        self._slots = np.zeros(size, dtype=np.uint32)
        self._shift = 64 - (size.bit_length() - 1)

    def _fields(self) -> None:
        """Cache the field views the table reads (after `_rows` is replaced)."""
        self._hi = self._rows["sha_hi"]
        self._mid = self._rows["sha_mid"]
        self._lo = self._rows["sha_lo"]

    def _home(self, hi: int, lo: int) -> int:
        """Home slot of a SHA-1 (Fibonacci hashing of its two u64 pieces)."""
        return (((hi ^ lo) * _GOLDEN) & _M64) >> self._shift

    def _homes(self, hi: npt.NDArray[np.uint64],
               lo: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:  # fmt: skip
        return (((hi ^ lo) * np.uint64(_GOLDEN)) >> np.uint64(self._shift)).astype(np.intp)

    def _find(self, name: str) -> tuple[int, int]:
        """(slot, row) of `name`; row -1 when absent (slot: where it would go)."""
        sha = sha_of(name)
        if sha is None:
            return -1, -1
        hi = int.from_bytes(sha[:8], "little")
        lo = int.from_bytes(sha[12:], "little")
        slots, his, los = self._slots, self._hi, self._lo
        mask = len(slots) - 1
        i = self._home(hi, lo)
        while True:
            v = int(slots[i])
            if v == 0:
                return i, -1
            r = v - 1
            if his[r] == hi and los[r] == lo:
                odd = self._odd.get(r)
                if odd is None:
                    if self._mid[r].tobytes() == sha[8:12] and name == name.lower():
                        return i, r
                elif odd == name:
                    return i, r
            i = (i + 1) & mask

    def _slot_of_row(self, row: int) -> int:
        """The slot that holds `row` (which must be in the table)."""
        slots, mask = self._slots, len(self._slots) - 1
        i = self._home(int(self._hi[row]), int(self._lo[row]))
        while int(slots[i]) != row + 1:
            i = (i + 1) & mask
        return i

    def _delete_slot(self, i: int) -> None:
        """Empty slot `i`, shifting later entries of its run back (no tombstones)."""
        slots, mask = self._slots, len(self._slots) - 1
        j = i
        while True:
            j = (j + 1) & mask
            v = int(slots[j])
            if v == 0:
                break
            home = self._home(int(self._hi[v - 1]), int(self._lo[v - 1]))
            # The entry at j may fill the hole at i unless its home lies in (i, j].
            if (i < j and (home <= i or home > j)) or (i > j and home <= i and home > j):
                slots[i] = v
                i = j
        slots[i] = 0

    def _insert_rows(self, rows: npt.NDArray[np.intp]) -> None:
        """Put `rows` into the table, vectorised: each round, every row still
        pending takes its current slot if free (one row per slot), the others
        move one slot on. Equivalent to inserting them one by one."""
        slots, mask = self._slots, len(self._slots) - 1
        pos = self._homes(self._hi[rows], self._lo[rows])
        pending = np.asarray(rows, dtype=np.intp)
        while len(pending):
            free = np.flatnonzero(slots[pos] == 0)
            if len(free):
                taken, first = np.unique(pos[free], return_index=True)
                won = free[first]
                slots[taken] = pending[won] + 1
                keep = np.ones(len(pending), dtype=bool)
                keep[won] = False
                pending, pos = pending[keep], pos[keep]
            pos = (pos + 1) & mask

    def _reserve(self, extra: int) -> None:
        """Room for `extra` more rows (rows array and table)."""
        need = self._n + extra
        if need > len(self._rows):
            grown = np.zeros(max(need, 2 * len(self._rows)), dtype=ROW)
            grown[: self._n] = self._rows[: self._n]
            self._rows = grown
            self._fields()
        if 2 * need > len(self._slots):
            self._table(_table_size(need))
            self._insert_rows(np.arange(self._n))

    # -- changes ----------------------------------------------------------------

    def put(self, s: Snapshot) -> Change:
        """Insert or update `s`; report what kind of change that was."""
        slot, i = self._find(s.name)
        sha = sha_of(s.name)
        if sha is None:
            raise ValueError(f"not a snapshot name: {s.name!r}")
        row = _to_row(s, sha)
        if i < 0:
            if 2 * (self._n + 1) > len(self._slots) or self._n == len(self._rows):
                self._reserve(1)
                slot = self._find(s.name)[0]
            i = self._n
            self._rows[i] = row
            self._slots[slot] = i + 1
            if row[-1] & ODD_NAME:  # type: ignore[operator]
                self._odd[i] = s.name
            self._n += 1
            self._bytes += s.seen.size
            self.generation += 1
            return Change.ADDED
        old = self._rows[i].item()
        if (old[3], old[4]) != (s.seen.dev, s.seen.ino):
            change = Change.REPLACED
            self.generation += 1
        else:
            change = Change.UPDATED
            row = (*row[:23], old[23], *row[24:])  # the same file keeps what its text told
        if row == old:
            return Change.UNCHANGED
        self._bytes += s.seen.size - old[5]
        self._rows[i] = row
        return change

    def put_many(self, rows: npt.NDArray[np.void],
                 names: Sequence[str] | npt.NDArray[np.bytes_]) -> None:  # fmt: skip
        """Append snapshots that are not indexed yet (the caller knows: a scan
        of names the index lacks), as ready-made `ROW` records; `names[i]` is
        the file of `rows[i]`, whose SHA-1 fields must match it."""
        m = len(rows)
        if m == 0:
            return
        self._reserve(m)
        base = self._n
        self._rows[base : base + m] = rows
        self._n += m
        self._insert_rows(np.arange(base, base + m))
        odd = np.flatnonzero(rows["flags"] & ODD_NAME)
        for j in odd:
            name = names[int(j)]
            self._odd[base + int(j)] = name.decode() if isinstance(name, bytes) else name
        self._bytes += int(rows["size"].sum())
        self.generation += 1

    def pop(self, name: str) -> Snapshot | None:
        """Remove `name`; return what was indexed, or None."""
        slot, i = self._find(name)
        if i < 0:
            return None
        gone = _from_row(name, self._rows[i].item())
        self._bytes -= gone.size
        self._delete_slot(slot)
        self._odd.pop(i, None)
        last = self._n - 1
        if i != last:  # move the last row into the hole: O(1), order is not kept
            self._slots[self._slot_of_row(last)] = i + 1
            self._rows[i] = self._rows[last]
            moved = self._odd.pop(last, None)
            if moved is not None:
                self._odd[i] = moved
        self._n -= 1
        self.generation += 1
        return gone

    def set_covered(self, names: Mapping[str, bool]) -> None:
        """Record which snapshots are strict prefixes of a longer compatible one."""
        for name, flag in names.items():
            i = self._find(name)[1]
            if i >= 0:
                self._rows["covered"][i] = flag

    def rows_of(self, names: Sequence[str] | npt.NDArray[np.bytes_]) -> npt.NDArray[np.intp]:
        """Row of each name (-1 when absent), vectorised over the table.
        `names` may be a list of str or a NAME array."""
        out = np.full(len(names), -1, dtype=np.intp)
        if not len(names) or not self._n:
            return out
        want, ok, upper = parse_names(names_array(names))
        for i in np.flatnonzero(ok & upper).tolist():  # upper-case names: one by one
            n = names[i]
            out[i] = self._find(n.decode() if isinstance(n, bytes) else n)[1]
        idx = np.flatnonzero(ok & ~upper)
        want = want[idx]
        slots, mask = self._slots, len(self._slots) - 1
        rows = self._rows
        pos = self._homes(want["sha_hi"], want["sha_lo"])
        pending = np.arange(len(idx))
        while len(pending):
            v = slots[pos[pending]].astype(np.intp)
            empty = v == 0
            r = v - 1
            hit = ~empty
            hit[hit] = ((rows["sha_hi"][r[hit]] == want["sha_hi"][pending[hit]])
                        & (rows["sha_lo"][r[hit]] == want["sha_lo"][pending[hit]])
                        & (rows["sha_mid"][r[hit]] == want["sha_mid"][pending[hit]])
                        & (rows["flags"][r[hit]] & ODD_NAME == 0))  # fmt: skip
            out[idx[pending[hit]]] = r[hit]
            pending = pending[~(empty | hit)]
            pos[pending] = (pos[pending] + 1) & mask
        return out

    def set_covered_rows(self, covered: npt.NDArray[np.bool_]) -> None:
        """Set every row's covered flag at once (`covered[i]` for row i)."""
        self._rows["covered"][: self._n] = covered


@dataclass(frozen=True, slots=True)
class Drift:
    """How a directory scan differs from the index: what reconcile repairs."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    gone: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.gone)


def drift(index: Index, scan: Mapping[str, Fingerprint]) -> Drift:
    """Compare a scan of snapshot names -> fingerprints with the index."""
    added = tuple(n for n in scan if n not in index)
    changed = tuple(
        n for n, fp in scan.items() if n in index and index.fingerprint(n) != fp
    )
    gone = tuple(n for n in index.names if n not in scan)
    return Drift(added, changed, gone)
