"""The index: what kvgroomd believes is in the cache directory.

Pure. A cache of the directory that can always be rebuilt from a scan (the
engine itself re-reads every header on each store; ccache and friends shipped
counter-drift bugs by never rebuilding). Rows live in one numpy structured
array so that policies score 100,000 snapshots in one vectorised pass and an
entry costs a couple of hundred bytes, not a Python object graph. Names are
found through a private hash table of row numbers (`_table.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from kvgroomd.core._names import HEXDIGITS, NAME, names_array, parse_names, sha_of
from kvgroomd.core._table import ShaTable, table_size
from kvgroomd.core.decision import Cause, Decision, Fingerprint
from kvgroomd.format.header import Header, Reason
from kvgroomd.format.layouts import ROW_FIELDS
from kvgroomd.format.prefix import HEAD_BYTES, SHORT_HEAD, text_keys

__all__ = ["HEAD_BYTES", "NAME", "ROW", "SHORT_HEAD", "Change", "Columns", "Index", "Snapshot",
           "decide", "decide_rows", "head_key", "names_array", "parse_names",
           "snapshot_of"]  # fmt: skip

# Rows carry each file's SHA-1 (which is its name), so the index keeps no
# Python object per entry: a name is rebuilt from its row when asked for.
ROW = np.dtype(
    [
        # The SHA-1 of the name in three pieces, so bytes 0..19 of a row are
        # the SHA-1 and the two u64 pieces are the hash table's key.
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
        # The 72-byte header's weights fingerprint (0: none, or another
        # layout): which engines load the file (format/layouts.same_engine).
        ("model_fp", "u8"),
        ("head", "u8"),  # format/prefix.py: first 64 text bytes, a bucket
        ("tail", "u8"),  # format/prefix.py: last 8 text bytes
        ("bkey", "u8"),  # format/prefix.py: key of the text's whole leading blocks
        # The cache's own clock (bytes landed, core/groomer.py) when this file
        # last landed or served a hit: the policies' measure of idleness that
        # does not depend on the pace of the traffic.
        ("act", "u8"),
        # Unix seconds (the core's `now`) when this version was first indexed.
        # Ages count from min(created_at, seen_at): a header time from a clock
        # that runs ahead cannot keep a file young for ever.
        ("seen_at", "u8"),
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
        ("layout", "u1"),  # format/layouts.py: the header's layout family (0: version 1)
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
_NAMES: tuple[str, ...] = ROW.names or ()  # the fields, in order
_HEADER_FIELDS = ("quant_bits", "ext_flags", "model_id", "tokens", "hits", "ctx_size", "abi",
                  "created_at", "last_used", "payload_bytes", "text_bytes",
                  "reason_code", "layout", "model_fp")  # fmt: skip
# The bulk reader fills a row from ROW_FIELDS, `put` from _HEADER_FIELDS: a
# header field one of them forgot would be lost on that path only.
assert {*_HEADER_FIELDS, "reason"} == {*ROW_FIELDS, "reason_code", "layout"}
_FP_FIELDS = ("dev", "ino", "size", "mtime_ns")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One indexed snapshot: its name, header, file identity and text keys.

    `tail` and `bkey` (format/prefix.py) are None when not known (a Snapshot
    built without its text); such a snapshot is a candidate for every longer
    one. `covered`, `act` and `seen_at` are the index's own facts about it.
    """

    name: str
    sha: str
    header: Header
    seen: Fingerprint
    head: int = SHORT_HEAD
    covered: bool = False
    tail: int | None = None
    bkey: int | None = None
    act: int = 0
    seen_at: int = 0

    @property
    def size(self) -> int:
        """Bytes on disk (st_size), what budgets count."""
        return self.seen.size


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


def _record(s: Snapshot, sha: bytes) -> dict[str, Any]:
    """The ROW fields of `s`, by name."""
    h = s.header
    flags = ((TAIL_KNOWN if s.tail is not None else 0) | (BKEY_KNOWN if s.bkey is not None else 0)
             | (0 if s.name == s.name.lower() else ODD_NAME))  # fmt: skip
    rec: dict[str, Any] = {f: getattr(h, f) for f in _HEADER_FIELDS}
    rec.update(zip(_FP_FIELDS, (s.seen.dev, s.seen.ino, s.seen.size, s.seen.mtime_ns),
                   strict=True))  # fmt: skip
    rec.update(sha_hi=int.from_bytes(sha[:8], "little"), sha_mid=sha[8:12],
               sha_lo=int.from_bytes(sha[12:], "little"), head=s.head, tail=s.tail or 0,
               bkey=s.bkey or 0, act=s.act, seen_at=s.seen_at, reason=int(h.reason),
               covered=s.covered, flags=flags)  # fmt: skip
    return rec


def same_file(old: Mapping[str, Any] | np.void, new: Snapshot) -> bool:
    """Whether `new` is the file of row `old` rewritten in place (a touch, a
    trailer rewrite) rather than another store under the same name. The
    engine never rewrites created_at in place, and ext4 hands a deleted
    file's inode number to the next file at once: so a new created_at on the
    same inode is a new store too."""
    return ((int(old["dev"]), int(old["ino"]), int(old["created_at"]))
            == (new.seen.dev, new.seen.ino, new.header.created_at))  # fmt: skip


def _row(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(rec[f] for f in _NAMES)


_AT = {f: i for i, f in enumerate(_NAMES)}  # field -> position in a row's tuple
_HEADER_AT = tuple(_AT[f] for f in _HEADER_FIELDS)
_FP_AT = tuple(_AT[f] for f in _FP_FIELDS)
_R, _FLAGS, _HEAD, _COV, _TAIL, _BKEY, _ACT, _SEEN = (_AT[f] for f in (
    "reason", "flags", "head", "covered", "tail", "bkey", "act", "seen_at"))  # fmt: skip


# Header's fields in its own order, as positions in a row's tuple (the reason
# is rebuilt from its code): a header is built positionally, no dict per row.
_HEADER_ORDER = tuple(f.name for f in dataclasses.fields(Header))[: len(_HEADER_FIELDS) + 1]
assert set(_HEADER_ORDER) == {"reason", *_HEADER_FIELDS}, _HEADER_ORDER
_REASON_SLOT = _HEADER_ORDER.index("reason")
_HEADER_POS = tuple(_AT[f] for f in _HEADER_ORDER if f != "reason")


def _snapshot(name: str, v: tuple[Any, ...]) -> Snapshot:
    """A row's values (`np.void.item()`) as a Snapshot, by field position
    (a start-up's decisions build thousands of them)."""
    args = [v[i] for i in _HEADER_POS]
    args.insert(_REASON_SLOT, _REASONS[v[_R]])
    flags = v[_FLAGS]
    return Snapshot(name, name[:40].lower(), Header(*args), Fingerprint(*(v[i] for i in _FP_AT)),
                    v[_HEAD], v[_COV], v[_TAIL] if flags & TAIL_KNOWN else None,
                    v[_BKEY] if flags & BKEY_KNOWN else None, v[_ACT], v[_SEEN])  # fmt: skip


def snapshot_of(name: str, record: np.void) -> Snapshot:
    """The Snapshot a `ROW` record describes, under file name `name`."""
    return _snapshot(name, cast("tuple[Any, ...]", record.item()))


# -- decisions: built here and only here -----------------------------------------


def decide(s: Snapshot, cause: Cause, now: float, **extra: Any) -> Decision:
    """A decision to unlink `s`, with the facts every unlink log line reports
    and the header bytes the deleter compares before it unlinks."""
    h = s.header
    fields = {"sha": s.sha, "reason": h.reason.label, "tokens": h.tokens, "hits": h.hits,
              "size": s.size, "age_s": max(0, round(now - h.created_at)), **extra}  # fmt: skip
    return Decision(s.name, cause, s.seen, fields, header=h.pack())


def decide_rows(index: Index, rows: npt.NDArray[np.intp], cause: Cause, now: float,
                **extra: Any) -> list[Decision]:  # fmt: skip
    """`decide` for each row; an `extra` value that is an array gives one
    value per row."""
    per_row = {k: v.tolist() for k, v in extra.items() if isinstance(v, np.ndarray)}
    fixed = {k: v for k, v in extra.items() if not isinstance(v, np.ndarray)}
    values = index.columns()[rows].tolist()  # one tuple per row, in one call
    out = []
    for j, (name, v) in enumerate(zip(index.names_at(rows), values, strict=True)):
        more = {k: col[j] for k, col in per_row.items()}
        out.append(decide(_snapshot(name, v), cause, now, **fixed, **more))
    return out


class Index:
    """Snapshots by file name, stored as rows of `ROW` (swap-remove on delete)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._rows: npt.NDArray[np.void] = np.zeros(max(capacity, 16), dtype=ROW)
        self._table = ShaTable(table_size(max(capacity, 16)))
        self._table.keys(self._rows["sha_hi"], self._rows["sha_lo"])
        self._n = 0
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
        return self.names_at(np.arange(self._n))

    def _sha_bytes(self) -> npt.NDArray[np.uint8]:
        return self._rows[: self._n].view(np.uint8).reshape(self._n, ROW.itemsize)[:, :20]

    def names_array(self, rows: npt.NDArray[np.intp] | None = None) -> npt.NDArray[np.bytes_]:
        """The file names of `rows` (all rows by default) as a NAME array."""
        sha = self._sha_bytes()
        if rows is not None:
            sha = sha[rows]
        text = np.empty((len(sha), 43), dtype=np.uint8)
        text[:, 0:40:2] = HEXDIGITS[sha >> 4]
        text[:, 1:40:2] = HEXDIGITS[sha & 15]
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
        hexes = self._sha_bytes()[rows].tobytes().hex()
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
        return None if r < 0 else _snapshot(name, self._rows[r].item())

    def at(self, row: int) -> Snapshot:
        """The snapshot in row `row`."""
        if not 0 <= row < self._n:
            raise IndexError(row)
        return _snapshot(self.name_at(row), self._rows[row].item())

    def fingerprint(self, name: str) -> Fingerprint | None:
        """The file identity last seen for `name` (cheaper than `get`)."""
        r = self._find(name)[1]
        if r < 0:
            return None
        row = self._rows[r]
        return Fingerprint(*(int(row[f]) for f in _FP_FIELDS))

    def _find(self, name: str) -> tuple[int, int]:
        """(slot, row) of `name`; row -1 when absent (slot: where it would go)."""
        sha = sha_of(name)
        if sha is None:
            return -1, -1
        mid, canonical = sha[8:12], name == name.lower()

        def same(r: int) -> bool:
            odd = self._odd.get(r)
            if odd is None:
                return canonical and self._rows["sha_mid"][r].tobytes() == mid
            return odd == name

        return self._table.find(int.from_bytes(sha[:8], "little"),
                                int.from_bytes(sha[12:], "little"), same)  # fmt: skip

    def _reserve(self, extra: int) -> None:
        """Room for `extra` more rows (rows array and table)."""
        need = self._n + extra
        if need > len(self._rows):
            grown = np.zeros(max(need, 2 * len(self._rows)), dtype=ROW)
            grown[: self._n] = self._rows[: self._n]
            self._rows = grown
            self._table.keys(self._rows["sha_hi"], self._rows["sha_lo"])
        if 2 * need > len(self._table):
            self._table = ShaTable(table_size(need))
            self._table.keys(self._rows["sha_hi"], self._rows["sha_lo"])
            self._table.insert_rows(np.arange(self._n))

    # -- changes ----------------------------------------------------------------

    def put(self, s: Snapshot) -> Change:
        """Insert or update `s`; report what kind of change that was. An
        in-place update keeps the row's `covered` flag (the text is the same)."""
        sha = sha_of(s.name)
        if sha is None:
            raise ValueError(f"not a snapshot name: {s.name!r}")
        rec = _record(s, sha)
        slot, i = self._find(s.name)
        if i < 0:
            if 2 * (self._n + 1) > len(self._table) or self._n == len(self._rows):
                self._reserve(1)
                slot = self._find(s.name)[0]
            i = self._n
            self._rows[i] = _row(rec)
            self._table.set(slot, i)
            if rec["flags"] & ODD_NAME:
                self._odd[i] = s.name
            self._n += 1
            self._bytes += s.seen.size
            self.generation += 1
            return Change.ADDED
        old = dict(zip(_NAMES, self._rows[i].item(), strict=True))
        if not same_file(old, s):
            change = Change.REPLACED
            self.generation += 1
        else:
            change = Change.UPDATED
            # The same file keeps what its text told and when it was first seen.
            rec["covered"], rec["seen_at"] = old["covered"], old["seen_at"]
        if rec == old:
            return Change.UNCHANGED
        self._bytes += s.seen.size - old["size"]
        self._rows[i] = _row(rec)
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
        self._table.insert_rows(np.arange(base, base + m))
        for j in np.flatnonzero(rows["flags"] & ODD_NAME):
            name = names[int(j)]
            self._odd[base + int(j)] = name.decode() if isinstance(name, bytes) else name
        self._bytes += int(rows["size"].sum())
        self.generation += 1

    def pop(self, name: str) -> Snapshot | None:
        """Remove `name`; return what was indexed, or None."""
        slot, i = self._find(name)
        if i < 0:
            return None
        gone = _snapshot(name, self._rows[i].item())
        self._bytes -= gone.size
        self._table.delete_slot(slot)
        self._odd.pop(i, None)
        last = self._n - 1
        if i != last:  # move the last row into the hole: O(1), order is not kept
            self._table.set(self._table.slot_of_row(last), i)
            self._rows[i] = self._rows[last]
            moved = self._odd.pop(last, None)
            if moved is not None:
                self._odd[i] = moved
        self._n -= 1
        self.generation += 1
        return gone

    def set_column(self, field: str, rows: npt.NDArray[np.intp], values: Any) -> None:
        """Set one of the index's own columns (`covered`, `act`, `seen_at`)."""
        if field not in ("covered", "act", "seen_at"):
            raise ValueError(f"{field} comes from the file, not the index")
        self._rows[field][rows] = values

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
        rows = self._rows

        def same(r: npt.NDArray[np.intp], which: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
            return np.asarray((rows["sha_mid"][r] == want["sha_mid"][which])
                              & (rows["flags"][r] & ODD_NAME == 0))  # fmt: skip

        out[idx] = self._table.lookup_many(want["sha_hi"], want["sha_lo"], same)
        return out
