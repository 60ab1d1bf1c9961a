"""Room to keep free below the engine's budget for its next store.

Pure. ds4-server evicts by its own score, in its own thread, before it writes
a file, whenever usage plus the incoming file would exceed its budget
(`--kv-disk-space-mb`). kvgroomd's choices only matter if that never has to
happen: so with `engine_budget` set, kvgroomd keeps usage at most the engine's
budget minus the size of the next store, and no lower than that.

The next store is predicted from the stores kvgroomd has seen land: the
largest of the last `WINDOW` of them. A prefill ladder writes rungs that grow
by one continued interval, and a conversation's evict save is as large as its
live state, which its recent stores bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

WINDOW = 16  # recent stores remembered


class Headroom:
    """Recent store sizes, and the room the next one is predicted to need."""

    def __init__(self, window: int = WINDOW) -> None:
        self._recent: deque[int] = deque(maxlen=window)

    def landed(self, size: int) -> None:
        """A store of `size` bytes landed."""
        self._recent.append(size)

    def seed(self, sizes: Iterable[int]) -> None:
        """Start from sizes already on disk, oldest first (a start-up scan)."""
        for s in sizes:
            self._recent.append(s)

    def need(self) -> int:
        """Bytes the next store is predicted to take (0 before any store)."""
        return max(self._recent, default=0)
