"""Room in waiting: files a budget pass chose that the engine will evict first.

kvgroomd keeps room below the engine's budget only because the engine evicts
by its own score, before it writes, whenever a store would not fit. That room
is needed when the engine stores, not before. Of the files a budget pass
chooses, those the engine's score ranks below every file kept are the very
files the engine takes first when it needs room: left in place until then
they may still serve hits, and when the engine stores it evicts them and
nothing kvgroomd wanted to keep.

That holds only while they stay the engine's first choice. A fresh file with
no hits can rank below them (a fresh store is exactly what the engine's score
undervalues), so every budget pass checks again (`Deferred.still_first`) and
unlinks them itself as soon as it no longer holds. When the engine does evict
a file left to it, that is not room the headroom failed to keep
(`Deferred.gone`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from kvgroomd.core.index import Columns, Index
from kvgroomd.core.scoring import Clock, engine_score


def engine_first(cols: Columns, victims: npt.NDArray[np.intp], clock: Clock,
                 spare: int) -> npt.NDArray[np.intp]:  # fmt: skip
    """The victims the engine's own eviction (`scoring.engine_score`) takes
    before every file not among them, lowest score first, up to `spare` bytes.
    Strictly lower scores only: ties go by times and scan order we cannot see.
    """
    if spare <= 0 or not len(victims):
        return victims[:0]
    score = engine_score(cols, clock, {})
    kept = np.ones(len(cols), dtype=bool)
    kept[victims] = False
    floor = score[kept].min() if kept.any() else np.inf
    first = victims[score[victims] < floor]
    first = first[np.argsort(score[first], kind="stable")]
    fits: npt.NDArray[np.intp] = first[np.cumsum(cols["size"][first]) <= spare]
    return fits


class Deferred:
    """The files left for the engine by the last budget pass."""

    def __init__(self) -> None:
        self.names: frozenset[str] = frozenset()
        # Every file left so since it last landed or served a hit: the engine
        # evicting one is not room the headroom missed.
        self._agreed: set[str] = set()

    def leave(self, names: Iterable[str], unmanaged: Iterable[str] = ()) -> None:
        """The last budget pass left `names` (replacing what was left before),
        and `unmanaged` files too large to keep under the limit at all."""
        self.names = frozenset(names)
        self._agreed.update(self.names)
        self._agreed.update(unmanaged)

    def changed(self, name: str) -> None:
        """`name` landed anew or served a hit: it is judged afresh."""
        self._agreed.discard(name)
        self.names -= {name}

    def gone(self, name: str) -> bool:
        """`name` left the directory; whether it had been left to the engine."""
        agreed = name in self._agreed
        self.changed(name)
        return agreed

    def rows(self, index: Index) -> npt.NDArray[np.intp]:
        """Index rows of the files left that are still indexed (not decided on,
        not gone)."""
        if not self.names:
            return np.zeros(0, dtype=np.intp)
        rows = index.rows_of(sorted(self.names))
        return rows[rows >= 0]

    def size(self, index: Index) -> int:
        """Bytes still left to the engine."""
        return int(index.columns()["size"][self.rows(index)].sum())

    def still_first(self, index: Index, clock: Clock) -> bool:
        """Whether the engine would still take every file left before any other."""
        rows = self.rows(index)
        spare = max(index.total_bytes, 1)  # no cut by size: all of them, or not
        return not len(rows) or len(engine_first(index.columns(), rows, clock, spare)) == len(rows)
