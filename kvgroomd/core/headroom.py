"""Room to keep free below the engine's budget for its next store.

Pure. ds4-server evicts by its own score, in its own thread, before it writes
a file, whenever usage plus the incoming file would exceed its budget
(`--kv-disk-space-mb`). kvgroomd's choices only matter if that never has to
happen: so with `engine_budget` set, kvgroomd keeps usage at most the engine's
budget minus the room the next store needs, and no lower than that.

The prediction uses only what kvgroomd sees, in the order it sees it:

* the largest of the last `WINDOW` stores: a prefill ladder's next rung is
  one continued interval longer than the last, and a conversation's evict
  save is as large as its live state, which its recent stores bound;
* plus, when the engine had to evict by itself anyway (files that left the
  directory without kvgroomd's decision, and not by being consumed: at most
  `cold_max_tokens`), the bytes it evicted in one go, over the same window:
  stores that land faster than kvgroomd can react (an evict save, the cold
  store and the rungs of the next request at instant prefill) need room
  together, and the engine's evictions measure how much was missing.

No wall clock: a faster or slower replay of the same traffic predicts the
same room (the first term); the second reacts only to the engine's own
evictions, which happen exactly when kvgroomd could not keep up. Not counted:
files kvgroomd chose and left for the engine to evict (core/evict.py `plan`),
and a `continued` file that the next landing extends (same text head, more
tokens): current engines demote the continued file the incoming one extends
and take it first whenever they evict at all, and supersession would have
removed it anyway.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

WINDOW = 16  # recent stores (and eviction episodes) remembered
CONSUME_TOKENS = 30000  # the engine's cold_max_tokens: larger files leave when hit


class Headroom:
    """Recent store sizes and engine evictions; the room the next store needs."""

    def __init__(self, window: int = WINDOW, consume_tokens: int = CONSUME_TOKENS) -> None:
        self._recent: deque[int] = deque(maxlen=window)
        self._episodes: deque[int] = deque(maxlen=window)
        self._evicting = 0  # bytes the engine evicted since the last store seen
        # `continued` files among them: (text head bucket, tokens, size)
        self._rungs: list[tuple[int, int, int]] = []
        self.consume_tokens = consume_tokens

    def landed(self, size: int, head: int | None = None, tokens: int = 0) -> None:
        """A store of `size` bytes landed (a new file, or a new version of one);
        `head` and `tokens`: its text head bucket and length."""
        demoted = sum(s for h, t, s in self._rungs if h == head and t < tokens)
        self._episodes.append(max(self._evicting - demoted, 0))
        self._evicting = 0
        self._rungs.clear()
        self._recent.append(size)

    def gone(self, size: int, tokens: int, *, rung_head: int | None = None) -> None:
        """A file of `size` bytes left without kvgroomd deciding it: the engine
        evicted it, unless it was large enough to be consumed by a hit.
        `rung_head`: the text head bucket of a `continued` file."""
        if tokens <= self.consume_tokens:
            self._evicting += size
            if rung_head is not None:
                self._rungs.append((rung_head, tokens, size))

    def seed(self, sizes: Iterable[int]) -> None:
        """Start from sizes already on disk, oldest first (a start-up scan)."""
        for s in sizes:
            self._recent.append(s)

    def need(self) -> int:
        """Bytes to keep free for what the engine stores next (0 before any store)."""
        burst = max(max(self._episodes, default=0), self._evicting)
        return max(self._recent, default=0) + burst
