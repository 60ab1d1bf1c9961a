"""Reuse evidence per branch point: were the saves that went this way used again?

Pure. A save (`evict`, `shutdown`) extends the longest earlier file that is
a prefix of its text, on disk or removed lately (core/removed.py): its
*parent*. Saves with one parent are siblings: the turns of one conversation
follow each other (each save the parent of the next, or the conversation's
earlier save), while the one-shot questions on one document all extend the
document's rung and are never asked again. Whether the siblings so far were
used again says how likely the next one is to be, whatever the files look
like (a question's save and a conversation's are alike in every header
field and text family when both follow the same system prompt).

A save counts as *used* when a hit rewrites its header or a later landing
extends it (its conversation went on), as *unused* when it leaves without
either: kvgroomd unlinked it, or the engine removed a file it could not have
consumed (at most `cold_max_tokens`; a larger file leaving may have been
consumed by a hit, which proves nothing either way). The index keeps each
save's parent's counts (`sib_used`, `sib_unused`); the policy turns them
into an estimate (core/scoring.py). Counts are kept for the last
`PARENTS` parents; without evidence (a start-up, a new branch) both are 0.

`Siblings` is the counting alone; `Branches` is what the decision core
(core/groomer.py) tells of each landing, hit and removal, and keeps the
index's columns in step.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from kvgroomd.core.index import Index, Snapshot
from kvgroomd.core.removed import Removed
from kvgroomd.format.header import Reason

PARENTS = 4096  # parents whose counts are remembered (~200 bytes each)
SAVES = (Reason.EVICT, Reason.SHUTDOWN)  # saves of a live session: what is counted


@dataclass(frozen=True, slots=True)
class Evidence:
    """A parent's counts changed: the saves of it still open to count them."""

    used: int
    unused: int
    saves: tuple[str, ...]


class Siblings:
    """Open saves by parent, and each parent's used/unused counts."""

    def __init__(self, parents: int = PARENTS) -> None:
        self._parent: dict[str, str] = {}  # open save -> its parent
        self._open: dict[str, set[str]] = {}  # parent -> its open saves
        self._counts: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.parents_kept = parents

    @property
    def open_saves(self) -> int:
        """Saves on disk not yet counted: bounded by the files on disk."""
        return len(self._parent)

    def counts(self, parent: str) -> tuple[int, int]:
        """(used, unused) of `parent`'s saves so far."""
        return self._counts.get(parent, (0, 0))

    def born(self, save: str, parent: str) -> tuple[int, int]:
        """`save` landed, extending `parent` at most: open until it is used or
        leaves. Returns its parent's counts (the save's own columns)."""
        self.forget(save)  # a new version of the name starts afresh
        self._parent[save] = parent
        self._open.setdefault(parent, set()).add(save)
        return self.counts(parent)

    def used(self, save: str) -> Evidence | None:
        """`save` served a hit or was extended."""
        return self._close(save, used=True)

    def unused(self, save: str) -> Evidence | None:
        """`save` left without being used."""
        return self._close(save, used=False)

    def forget(self, save: str) -> None:
        """`save` left in a way that proves nothing."""
        parent = self._parent.pop(save, None)
        if parent is not None:
            self._drop(parent, save)

    def _close(self, save: str, *, used: bool) -> Evidence | None:
        parent = self._parent.pop(save, None)
        if parent is None:
            return None  # not a save, or counted already
        self._drop(parent, save)
        u, n = self.counts(parent)
        counts = (u + 1, n) if used else (u, n + 1)
        self._counts[parent] = counts
        self._counts.move_to_end(parent)
        if len(self._counts) > self.parents_kept:
            self._counts.popitem(last=False)
        return Evidence(*counts, tuple(sorted(self._open.get(parent, ()))))

    def _drop(self, parent: str, save: str) -> None:
        siblings = self._open.get(parent)
        if siblings is not None:
            siblings.discard(save)
            if not siblings:
                del self._open[parent]


class Branches:
    """The reuse evidence of one index: each save's parent, found when it
    lands, and its parent's counts in the index's `sib_used`/`sib_unused`."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.siblings = Siblings()
        self.removed = Removed()  # files gone lately: a save's parent may be one

    def new_version(self, name: str) -> None:
        """`name` was added or replaced: on disk again, and judged afresh."""
        self.removed.back(name)
        self.siblings.forget(name)

    def landing(self, new: Snapshot, text: bytes, extends: list[str]) -> None:
        """`new`'s text strictly extends the indexed files `extends` (longest
        first): the saves among them were used (their conversation went on).
        A save's parent is the longest file it extends, indexed or removed."""
        for name in extends:
            self._follow(self.siblings.used(name))
        if new.header.reason not in SAVES:
            return
        longest = self.index.get(extends[0]) if extends else None
        parent = (longest.name, longest.header.text_bytes) if longest else ("", -1)
        for name, length in self.removed.extended_by(new.name, text):
            parent = max(parent, (name, length), key=lambda p: p[1])
        if parent[1] < 0:
            return
        self._write([new.name], *self.siblings.born(new.name, parent[0]))

    def hit(self, name: str) -> None:
        """The engine served a hit from `name`."""
        self._follow(self.siblings.used(name))

    def left(self, old: Snapshot, *, by_us: bool, consume_tokens: int) -> None:
        """`old` left the directory: remembered as removed; a save still open
        counts as unused, unless the engine removed a file it may have
        consumed on a hit (over `consume_tokens`), which proves nothing."""
        self.removed.removed(old.name, old.header.text_bytes, old.tail)
        if by_us or old.header.tokens <= consume_tokens:
            self._follow(self.siblings.unused(old.name))
        else:
            self.siblings.forget(old.name)

    def forget(self, name: str) -> None:
        """`name` stopped counting (a file the engine would not load)."""
        self.siblings.forget(name)

    def _follow(self, ev: Evidence | None) -> None:
        """A parent's counts changed: its open saves' columns follow."""
        if ev is not None and ev.saves:
            self._write(list(ev.saves), ev.used, ev.unused)

    def _write(self, names: list[str], used: int, unused: int) -> None:
        """The counts into the columns of the indexed `names`."""
        rows = self.index.rows_of(names)
        rows = rows[rows >= 0]
        self.index.set_column("sib_used", rows, used)
        self.index.set_column("sib_unused", rows, unused)
