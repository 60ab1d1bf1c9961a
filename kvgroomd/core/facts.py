"""What the shell found on disk, as plain values the core decides on.

Pure. `daemon/read.py` produces these from real files and the simulator from
its in-memory directory; `core/groomer.py` consumes them. A `Snapshot` (one
usable file) and a `Listing` (names and fingerprints of a whole directory)
live in `index.py`, beside the rows they become.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kvgroomd.core.decision import Fingerprint
from kvgroomd.core.index import NAME, ROW


@dataclass(frozen=True, slots=True)
class Invalid:
    """A snapshot-named entry kvgroomd will not act on, and why. The engine
    ignores such a file, so it is never counted and never decided on."""

    name: str
    # short | magic | unknown_format | invalid | truncated | not_regular |
    # unreadable | other_layout (a snapshot of a layout the engine does not
    # read: counted apart, left alone; format/layouts.py)
    why: str
    detail: str
    seen: Fingerprint | None = None
    layout: str | None = None  # other_layout: the registry name of the file's layout


@dataclass
class Loaded:
    """Many files read at once: index rows (ROW) of the usable snapshots, in
    the order of `names`, the unusable ones, and each row's prefix probes
    (format/prefix.py) as flat arrays: `probe_keys[j]` belongs to
    `rows[probe_rows[j]]`. Probe keys keep the low 32 bits of the keys (half
    the memory; a chance collision only adds a candidate that its SHA-1 then
    rejects)."""

    rows: npt.NDArray[np.void]
    names: npt.NDArray[np.bytes_]  # index.NAME: names[i] is the file of rows[i]
    invalid: list[Invalid]
    gone: list[str]  # vanished between the listing and the open
    probe_rows: npt.NDArray[np.int32]
    probe_keys: npt.NDArray[np.uint32]

    @classmethod
    def empty(cls) -> Loaded:
        """Nothing read."""
        return cls(np.zeros(0, dtype=ROW), np.zeros(0, dtype=NAME), [], [],
                   np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.uint32))  # fmt: skip
