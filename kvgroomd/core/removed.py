"""Files removed lately, and which of them a new text strictly extends.

Pure. The core proves prefix relations between files on disk together
(core/chains.py); a file that already left (consumed by a hit, evicted, a
rung superseded) is remembered here by its name, its text length and its
last 8 text bytes (the index's `tail`), in a ring of the last `size`
removals. So a later landing can still be linked to it: the reuse evidence
(core/branches.py) needs the longest earlier file a save extends, gone or
not, and the activity trace (daemon/tracegone.py) records the relations a
replay at a larger budget needs.

Cheap: one gather over the landing's text rules out almost every remembered
file (its 8 bytes at that length differ); SHA-1 proves the few left, in one
pass over the text.
"""

from __future__ import annotations

import numpy as np

from kvgroomd.core.supersede import prefixes_of
from kvgroomd.format.prefix import TAIL_BYTES, windows

# Removed files remembered (a slot of ~100 bytes each): a session coming back
# after this many removals is not linked to its last save.
REMOVED_FILES = 1024


class Removed:
    """A ring of the files removed last: name, text length, tail."""

    def __init__(self, size: int = REMOVED_FILES) -> None:
        self._names: list[str] = [""] * size
        self._length = np.zeros(size, dtype=np.int64)  # 0: a free slot
        self._tail = np.zeros(size, dtype=np.uint64)
        self._slot: dict[str, int] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, name: str) -> bool:
        return name in self._slot

    def removed(self, name: str, text_bytes: int, tail: int | None) -> None:
        """`name` left the directory (a text shorter than 8 bytes, or of an
        unknown tail, cannot be proven a prefix of anything: not kept)."""
        if tail is None or text_bytes < TAIL_BYTES or name in self._slot:
            return
        slot = self._next
        self._next = (slot + 1) % len(self._names)
        if self._slot.get(self._names[slot]) == slot:  # the oldest is forgotten
            del self._slot[self._names[slot]]
        self._names[slot], self._length[slot], self._tail[slot] = name, text_bytes, tail
        self._slot[name] = slot

    def back(self, name: str) -> None:
        """`name` landed again: it is on disk, not removed."""
        slot = self._slot.pop(name, None)
        if slot is not None:
            self._length[slot] = 0

    def extended_by(self, name: str, text: bytes) -> list[tuple[str, int]]:
        """The removed files whose texts are strict prefixes of `text` (the
        text of snapshot `name`, which must hash to its name), with their
        text lengths."""
        win = windows(text)
        if win is None or not self._slot:
            return []
        length = self._length
        rows = np.flatnonzero((length >= TAIL_BYTES) & (length < len(text)))
        rows = rows[win[length[rows] - TAIL_BYTES] == self._tail[rows]]  # ends as they do?
        if not len(rows):
            return []
        olds = [self._names[int(i)] for i in rows]
        try:
            shas = [bytes.fromhex(o[:40]) for o in olds]
            found = prefixes_of(text, bytes.fromhex(name[:40]), length[rows].tolist(), shas)
        except ValueError:  # not a snapshot's name: nothing to prove
            return []
        return [(o, int(n)) for o, n, yes in zip(olds, length[rows].tolist(), found or [],
                                                  strict=False) if yes]  # fmt: skip
