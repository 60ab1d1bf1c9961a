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
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

PARENTS = 4096  # parents whose counts are remembered (~200 bytes each)


@dataclass(frozen=True, slots=True)
class Evidence:
    """A parent's counts changed: the saves of it still open to count them."""

    used: int
    unused: int
    saves: tuple[str, ...]


class Branches:
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
