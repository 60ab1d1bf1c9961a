"""Drift: how a full listing of the directory differs from the index.

Pure. The shell lists the directory (names and lstat fingerprints); what
differs from the index is what a rescan repairs: files added or changed
while nobody watched (they are read again) and files gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kvgroomd.core._names import names_array
from kvgroomd.core.decision import Fingerprint
from kvgroomd.core.index import Index


@dataclass(frozen=True, slots=True)
class Listing:
    """A full listing of the directory: each snapshot-named file's name
    (a NAME array) and lstat fingerprint, as of one pass."""

    names: npt.NDArray[np.bytes_]
    dev: npt.NDArray[np.uint64]
    ino: npt.NDArray[np.uint64]
    size: npt.NDArray[np.int64]
    mtime_ns: npt.NDArray[np.int64]

    @classmethod
    def of(cls, entries: Mapping[str, Fingerprint]) -> Listing:
        """A listing from names and fingerprints (tests, the simulator)."""
        fps = list(entries.values())
        return cls(names_array(list(entries)),
                   np.array([f.dev for f in fps], dtype=np.uint64),
                   np.array([f.ino for f in fps], dtype=np.uint64),
                   np.array([f.size for f in fps], dtype=np.int64),
                   np.array([f.mtime_ns for f in fps], dtype=np.int64))  # fmt: skip

    def without(self, keep: npt.NDArray[np.bool_]) -> Listing:
        """The entries where `keep` is True."""
        return Listing(self.names[keep], self.dev[keep], self.ino[keep], self.size[keep],
                       self.mtime_ns[keep])  # fmt: skip


@dataclass(frozen=True, slots=True)
class Drift:
    """How a listing differs from the index: what a rescan repairs. `added`
    and `changed` are NAME arrays (to be read); `gone` are names."""

    added: npt.NDArray[np.bytes_]
    changed: npt.NDArray[np.bytes_]
    gone: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(len(self.added) or len(self.changed) or self.gone)

    @property
    def to_read(self) -> npt.NDArray[np.bytes_]:
        """Every name whose file must be read: added, then changed."""
        return np.concatenate((self.added, self.changed)) if len(self.changed) else self.added


def drift(index: Index, listing: Listing) -> Drift:
    """Compare a listing with the index, vectorised: a name is changed when
    any part of its fingerprint differs (another inode, size or mtime)."""
    rows = index.rows_of(listing.names)
    cols = index.columns()
    known = rows >= 0
    r = rows[known]
    same = np.zeros(len(rows), dtype=bool)
    same[known] = ((cols["dev"][r] == listing.dev[known]) & (cols["ino"][r] == listing.ino[known])
                   & (cols["size"][r] == listing.size[known])
                   & (cols["mtime_ns"][r] == listing.mtime_ns[known]))  # fmt: skip
    present = np.zeros(len(index), dtype=bool)
    present[r] = True
    return Drift(added=listing.names[~known], changed=listing.names[known & ~same],
                 gone=tuple(index.names_at(np.flatnonzero(~present))))  # fmt: skip
