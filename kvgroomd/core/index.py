"""The index: what kvgroomd believes is in the cache directory.

Pure. A cache of the directory that can always be rebuilt from a scan (the
engine itself re-reads every header on each store; ccache and friends shipped
counter-drift bugs by never rebuilding). Rows live in one numpy structured
array so that policies score 100,000 snapshots in one vectorised pass and an
entry costs a couple of hundred bytes, not a Python object graph. Names are
found through a private hash table of row numbers (`_table.py`); what a
row holds, and the Snapshot it stands for, is `_rows.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

from kvgroomd.core._names import HEXDIGITS, NAME, names_array, parse_names, sha_of
from kvgroomd.core._rows import (
    BKEY_KNOWN,
    FIELDS,
    FP_FIELDS,
    ODD_NAME,
    ROW,
    TAIL_KNOWN,
    Columns,
    Snapshot,
    head_key,
    record_of,
    row_values,
    same_file,
    snapshot_from,
    snapshot_of,
)  # fmt: skip
from kvgroomd.core._table import ShaTable, table_size
from kvgroomd.core.decision import Cause, Decision, Fingerprint
from kvgroomd.format.prefix import HEAD_BYTES, SHORT_HEAD

__all__ = ["BKEY_KNOWN", "HEAD_BYTES", "NAME", "ODD_NAME", "ROW", "SHORT_HEAD", "TAIL_KNOWN",
           "Change", "Columns", "Index", "Snapshot", "decide", "decide_rows", "head_key",
           "names_array", "parse_names", "same_file", "snapshot_of"]  # fmt: skip

# What an in-place rewrite of a file (a hit) leaves as it was: the index's own
# facts about its text and its branch, and when it was first seen.
_KEPT = ("covered", "seen_at", "sib_used", "sib_unused")


class Change(Enum):
    """What `Index.put` did."""

    ADDED = "added"
    UPDATED = "updated"  # same file, header or size rewritten in place
    REPLACED = "replaced"  # same name, another inode (engine rename/replace)
    UNCHANGED = "unchanged"


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
        out.append(decide(snapshot_from(name, v), cause, now, **fixed, **more))
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
        return None if r < 0 else snapshot_from(name, self._rows[r].item())

    def at(self, row: int) -> Snapshot:
        """The snapshot in row `row`."""
        if not 0 <= row < self._n:
            raise IndexError(row)
        return snapshot_from(self.name_at(row), self._rows[row].item())

    def fingerprint(self, name: str) -> Fingerprint | None:
        """The file identity last seen for `name` (cheaper than `get`)."""
        r = self._find(name)[1]
        if r < 0:
            return None
        row = self._rows[r]
        return Fingerprint(*(int(row[f]) for f in FP_FIELDS))

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
        in-place update keeps the index's own facts of the row (`_KEPT`)."""
        sha = sha_of(s.name)
        if sha is None:
            raise ValueError(f"not a snapshot name: {s.name!r}")
        rec = record_of(s, sha)
        slot, i = self._find(s.name)
        if i < 0:
            if 2 * (self._n + 1) > len(self._table) or self._n == len(self._rows):
                self._reserve(1)
                slot = self._find(s.name)[0]
            i = self._n
            self._rows[i] = row_values(rec)
            self._table.set(slot, i)
            if rec["flags"] & ODD_NAME:
                self._odd[i] = s.name
            self._n += 1
            self._bytes += s.seen.size
            self.generation += 1
            return Change.ADDED
        old = dict(zip(FIELDS, self._rows[i].item(), strict=True))
        if not same_file(old, s):
            change = Change.REPLACED
            self.generation += 1
        else:
            change = Change.UPDATED
            for kept in _KEPT:
                rec[kept] = old[kept]
        if rec == old:
            return Change.UNCHANGED
        self._bytes += s.seen.size - old["size"]
        self._rows[i] = row_values(rec)
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
        gone = snapshot_from(name, self._rows[i].item())
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
        """Set one of the index's own columns (`covered`, `act`, `seen_at`,
        `sib_used`, `sib_unused`)."""
        if field not in ("covered", "act", "seen_at", "sib_used", "sib_unused"):
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
