"""Which removed files a new landing strictly extends, for the activity trace.

The core proves prefix relations only between files on disk together. A
replay (sim/tracereplay.py) needs more: a lookup is served by the longest
file on disk that is a prefix of its prompt, and at a budget larger than
the recorded one that may be a file the recording had already lost (a
session's last save, evicted before the session came back). The trace can
only credit it if it knows that file is a prefix of what the session stored
next. So each landing's text is checked against the files removed lately
(by the engine or by kvgroomd, whatever their reason: core/removed.py, the
ring the core's reuse evidence uses too), with the tails of the files that
landed lately remembered here (the engine's removal carries no text). A
landing is queued and checked when the daemon is idle, or before the next
change it handles (a supersession or an engine eviction after it may remove
the file); the recorder checks at once a landing kvgroomd decided to remove.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from kvgroomd.core.removed import REMOVED_FILES, Removed

# Landings whose tails are remembered (~150 bytes each): the engine's removal
# of a file that landed longer ago than this is not remembered (kvgroomd's
# own removals carry the tail).
TAILS = 8192
QUEUE_MAX = 256  # landings waiting to be checked: past this, checked at once


class GoneTexts:
    """Files removed lately, the tails of files landed lately, and the
    landings still to be checked."""

    def __init__(self, size: int = REMOVED_FILES, tails: int = TAILS) -> None:
        self._tails: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.tails_kept = tails
        self._removed = Removed(size)
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
        self._removed.removed(name, text_bytes, known if tail is None else tail)

    def landed(self, name: str, tail: int | None) -> None:
        """`name` landed: to be checked (it is no longer gone, if it was)."""
        self.seen(name, tail)
        self._removed.back(name)
        if len(self._removed):
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
            data = text(name)
            if data and (found := self._removed.extended_by(name, data)):
                out.append((name, [o for o, _ in found]))
        return out
