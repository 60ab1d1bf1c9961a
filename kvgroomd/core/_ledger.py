"""The core's book of decisions in flight and of what a dry run judged.

Pure. A decided file leaves the index at once (so the next choice sees the
room it frees) and waits here, *pending*, until the deleter settles it. In a
dry run a judged file is *held*: it stays out of the index for as long as it
is the very version judged, so a dry run decides what a real run would.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kvgroomd.core.decision import Decision, Fingerprint
from kvgroomd.core.drift import Listing
from kvgroomd.core.index import Index, Snapshot

_FP = ("dev", "ino", "size", "mtime_ns")


class Ledger:
    """Pending decisions (name -> what was indexed) and held dry-run versions."""

    def __init__(self) -> None:
        self.pending: dict[str, Snapshot | None] = {}
        self.pending_bytes = 0
        self.held: dict[str, Fingerprint] = {}

    def __bool__(self) -> bool:
        return bool(self.pending or self.held)

    def hold(self, index: Index, decisions: list[Decision]) -> list[Decision]:
        """Take decided files out of the index until the deleter settles them."""
        for d in decisions:
            snap = index.pop(d.name)
            self.pending[d.name] = snap
            if snap is not None:
                self.pending_bytes += snap.size
        return decisions

    def release(self, name: str) -> Snapshot | None:
        """A decision settled: what was indexed when it was made."""
        snap = self.pending.pop(name, None)
        if snap is not None:
            self.pending_bytes -= snap.size
        return snap

    def judged(self, name: str, seen: Fingerprint) -> bool:
        """Dry run: this very version was judged already (keep it out)."""
        return self.held.get(name) == seen

    def held_in(self, listing: Listing) -> Listing:
        """`listing` without the held versions; held files gone or changed
        are forgotten (the engine's business again)."""
        if not self.held:
            return listing
        keep = np.ones(len(listing.names), dtype=bool)
        listed = {}
        for i, b in enumerate(listing.names.tolist()):
            name = b.decode()
            if name in self.held:
                listed[name] = Fingerprint(int(listing.dev[i]), int(listing.ino[i]),
                                           int(listing.size[i]), int(listing.mtime_ns[i]))
                keep[i] = listed[name] != self.held[name]
        for name in [n for n in self.held if listed.get(n) != self.held[n]]:
            del self.held[name]
        return listing.without(keep)

    def not_held(self, rows: npt.NDArray[np.void],
                 names: npt.NDArray[np.bytes_]) -> npt.NDArray[np.bool_]:  # fmt: skip
        """For read rows: True unless the row is a held version."""
        take = np.ones(len(rows), dtype=bool)
        if self.held:
            for j, b in enumerate(names.tolist()):
                fp = self.held.get(b.decode())
                if fp is not None and fp == Fingerprint(*(int(rows[f][j]) for f in _FP)):
                    take[j] = False
        return take
