"""Which removed files a new landing strictly extends, for the activity trace.

The core proves prefix relations only between files on disk together. A
replay (sim/tracereplay.py) needs more: a lookup is served by the longest
file on disk that is a prefix of its prompt, and at a budget larger than
the recorded one that may be a file the recording had already lost (a
session's last save, evicted before the session came back). The trace can
only credit it if it knows that file is a prefix of what the session stored
next. So each landing's text is checked against the files removed lately
(by the engine or by kvgroomd, whatever their reason).

Cheap: a removed file is remembered by its length and its last 8 text bytes
(the core's `tail`), so one gather over the landing's text rules out almost
every one of them; SHA-1 proves the few left, in one pass. A landing is
queued and checked when the daemon is idle, or before the next change it
handles (a supersession or an engine eviction after it may remove the
file); the recorder checks at once a landing kvgroomd decided to remove.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np

from kvgroomd.core.supersede import prefixes_of
from kvgroomd.format.prefix import TAIL_BYTES, windows

# Removed files remembered (a slot of ~150 bytes each): a session coming back
# after this many removals is not linked to its last save.
GONE_FILES = 1024
# Landings whose tails are remembered (~150 bytes each): the engine's removal
# of a file that landed longer ago than this is not remembered (kvgroomd's
# own removals carry the tail).
TAILS = 8192
QUEUE_MAX = 256  # landings waiting to be checked: past this, checked at once


class GoneTexts:
    """Files removed lately, the tails of files landed lately, and the
    landings still to be checked."""

    def __init__(self, size: int = GONE_FILES, tails: int = TAILS) -> None:
        self._tails: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.tails_kept = tails
        # A ring of removed files: name, text length (0: a free slot), tail.
        self._names: list[str] = [""] * size
        self._length = np.zeros(size, dtype=np.int64)
        self._tail = np.zeros(size, dtype=np.uint64)
        self._slot: dict[str, int] = {}
        self._next = 0
        self._queue: list[str] = []

    def seen(self, name: str, tail: int | None) -> None:
        """`name` is on disk and its text ends with `tail` (None: not known)."""
        if tail is None:
            return
        self._tails[name] = tail
        self._tails.move_to_end(name)
        if len(self._tails) > self.tails_kept:
            self._tails.popitem(last=False)

    def removed(self, name: str, text_bytes: int, tail: int | None = None) -> None:
        """`name` left the directory; its tail, if not given, as last seen."""
        known = self._tails.pop(name, None)
        tail = known if tail is None else tail
        if tail is None or text_bytes < TAIL_BYTES or name in self._slot:
            return
        slot = self._next
        self._next = (slot + 1) % len(self._names)
        if self._slot.get(self._names[slot]) == slot:  # the oldest is forgotten
            del self._slot[self._names[slot]]
        self._names[slot], self._length[slot], self._tail[slot] = name, text_bytes, tail
        self._slot[name] = slot

    def landed(self, name: str, tail: int | None) -> None:
        """`name` landed: to be checked (it is no longer gone, if it was)."""
        self.seen(name, tail)
        slot = self._slot.pop(name, None)
        if slot is not None:
            self._length[slot] = 0
        if self._slot:
            self._queue.append(name)

    @property
    def waiting(self) -> bool:
        """Landings are queued."""
        return bool(self._queue)

    @property
    def full(self) -> bool:
        """The queue is as long as it may get."""
        return len(self._queue) >= QUEUE_MAX

    def check(self, text: Callable[[str], bytes | None],
              only: str | None = None) -> list[tuple[str, list[str]]]:  # fmt: skip
        """Check the queued landings (or just `only`, taken off the queue):
        for each whose text `text(name)` reads, the removed files it strictly
        extends (proven by SHA-1), when any."""
        if only is not None:
            if only not in self._queue:
                return []
            self._queue.remove(only)
            names = [only]
        else:
            names, self._queue = self._queue, []
        out = []
        for name in names:
            if found := self._extends(name, text):
                out.append((name, found))
        return out

    def _extends(self, name: str, text: Callable[[str], bytes | None]) -> list[str]:
        data = text(name)
        win = windows(data) if data else None
        if data is None or win is None:
            return []
        length = self._length
        rows = np.flatnonzero((length >= TAIL_BYTES) & (length < len(data)))
        rows = rows[win[length[rows] - TAIL_BYTES] == self._tail[rows]]  # ends as they do?
        if not len(rows):
            return []
        olds = [self._names[int(i)] for i in rows]
        try:
            shas = [bytes.fromhex(o[:40]) for o in olds]
            found = prefixes_of(data, bytes.fromhex(name[:40]), length[rows].tolist(), shas)
        except ValueError:  # not a snapshot's name: nothing to prove
            return []
        return [o for o, yes in zip(olds, found or [], strict=False) if yes]
