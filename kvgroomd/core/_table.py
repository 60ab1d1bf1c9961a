"""The index's private hash table: SHA-1 -> row number, without a Python object per entry.

Pure. Open addressing with linear probing over a numpy array of `row + 1`
(0 = empty), keyed by two u64 pieces of the SHA-1 the row itself holds, so the
table stores nothing but row numbers. Deletion shifts later entries of a run
back (no tombstones). `Index` is its only user; nothing else should need it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

_GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
U64s = npt.NDArray[np.uint64]
Rows = npt.NDArray[np.intp]


def table_size(n: int) -> int:
    """Slots for `n` entries at a load of at most 1/2 (a power of two)."""
    return 1 << max(4, (2 * n - 1).bit_length())


class ShaTable:
    """Row numbers by SHA-1. The caller owns the keys: `hi[row]`, `lo[row]`
    (set with `keys`) are the two u64 pieces of each row's SHA-1."""

    def __init__(self, size: int) -> None:
        self.slots = np.zeros(size, dtype=np.uint32)
        self._shift = 64 - (size.bit_length() - 1)
        self.hi: U64s = np.zeros(0, dtype=np.uint64)
        self.lo: U64s = np.zeros(0, dtype=np.uint64)

    def keys(self, hi: U64s, lo: U64s) -> None:
        """The key columns of the rows (views into the index's rows)."""
        self.hi, self.lo = hi, lo

    def __len__(self) -> int:
        return len(self.slots)

    def home(self, hi: int, lo: int) -> int:
        """Home slot of a key (Fibonacci hashing of its two u64 pieces)."""
        return (((hi ^ lo) * _GOLDEN) & _M64) >> self._shift

    def homes(self, hi: U64s, lo: U64s) -> Rows:
        """`home` of many keys at once."""
        return (((hi ^ lo) * np.uint64(_GOLDEN)) >> np.uint64(self._shift)).astype(np.intp)

    def find(self, hi: int, lo: int, same: Callable[[int], bool]) -> tuple[int, int]:
        """(slot, row) of the row with key (hi, lo) for which `same(row)`
        holds (it compares what the key does not cover); row -1 when absent
        (slot: where it would go)."""
        slots, his, los = self.slots, self.hi, self.lo
        mask = len(slots) - 1
        i = self.home(hi, lo)
        while True:
            v = int(slots[i])
            if v == 0:
                return i, -1
            r = v - 1
            if his[r] == hi and los[r] == lo and same(r):
                return i, r
            i = (i + 1) & mask

    def set(self, slot: int, row: int) -> None:
        """Point `slot` at `row`."""
        self.slots[slot] = row + 1

    def slot_of_row(self, row: int) -> int:
        """The slot that holds `row` (which must be in the table)."""
        slots, mask = self.slots, len(self.slots) - 1
        i = self.home(int(self.hi[row]), int(self.lo[row]))
        while int(slots[i]) != row + 1:
            i = (i + 1) & mask
        return i

    def delete_slot(self, i: int) -> None:
        """Empty slot `i`, shifting later entries of its run back (no tombstones)."""
        slots, mask = self.slots, len(self.slots) - 1
        j = i
        while True:
            j = (j + 1) & mask
            v = int(slots[j])
            if v == 0:
                break
            home = self.home(int(self.hi[v - 1]), int(self.lo[v - 1]))
            # The entry at j may fill the hole at i unless its home lies in (i, j].
            if (i < j and (home <= i or home > j)) or (i > j and home <= i and home > j):
                slots[i] = v
                i = j
        slots[i] = 0

    def insert_rows(self, rows: Rows) -> None:
        """Put `rows` into the table, vectorised: each round, every row still
        pending takes its current slot if free (one row per slot), the others
        move one slot on. Equivalent to inserting them one by one."""
        slots, mask = self.slots, len(self.slots) - 1
        pos = self.homes(self.hi[rows], self.lo[rows])
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

    def lookup_many(self, hi: U64s, lo: U64s,
                    same: Callable[[Rows, Rows], npt.NDArray[np.bool_]]) -> Rows:  # fmt: skip
        """Row of each key (-1 when absent), vectorised. `same(rows, which)`
        says, for candidate rows and the indexes of the keys they are
        compared with, whether they match beyond the key."""
        out = np.full(len(hi), -1, dtype=np.intp)
        slots, mask = self.slots, len(self.slots) - 1
        pos = self.homes(hi, lo)
        pending = np.arange(len(hi))
        while len(pending):
            v = slots[pos[pending]].astype(np.intp)
            empty = v == 0
            r = v - 1
            hit = ~empty
            rh, ph = r[hit], pending[hit]
            hit[hit] = (self.hi[rh] == hi[ph]) & (self.lo[rh] == lo[ph]) & same(rh, ph)
            out[pending[hit]] = r[hit]
            pending = pending[~(empty | hit)]
            pos[pending] = (pos[pending] + 1) & mask
        return out
