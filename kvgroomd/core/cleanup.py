"""Leak cleanup (opt-in): crash-left temp files and files of the older format.

Pure. The engine never counts or removes either kind (spec section 3,
"Crashes"; section 2, ABI 0), so they leak disk for ever. This module only
decides; the shell gathers the facts (`scan.py`: is the writer pid alive,
mtime) and `daemon/apply.py` deletes, re-checking each file's fingerprint first.

- `orphan_temps`: `<sha>.kv.tmp.<pid>` whose writer process is gone *and*
  whose mtime is older than `orphan_temp_age`. Both, because a pid can only be
  checked in our own PID namespace: an engine in a container writes its own
  pid, which here may name no process at all while it is still writing. A file
  being written has a fresh mtime, so the age rule keeps it.
- `stale_format`: `<sha>.kv` with payload ABI 0, which engines since
  2026-05-26 never load. Only the operator knows the engine is current (an
  older engine still uses them), hence a switch, off by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from kvgroomd.core.decision import Cause, Decision, Fingerprint
from kvgroomd.core.index import Index, decide
from kvgroomd.format.header import ABI_LEGACY


@dataclass(frozen=True, slots=True)
class TempFile:
    """Facts about one `<sha>.kv.tmp.<pid>` gathered by the shell."""

    name: str
    sha: str
    pid: int
    writer_alive: bool  # os.kill(pid, 0) found a process (in our PID namespace)
    seen: Fingerprint
    expected_size: int | None = None  # from its header, when already written

    @property
    def mtime(self) -> float:
        """Last modification, Unix seconds."""
        return self.seen.mtime_ns / 1e9

    def age(self, now: float) -> float:
        """Seconds since the last write (negative if the clock moved back)."""
        return now - self.mtime

    def is_orphan(self, now: float, min_age: float) -> bool:
        """Left by a crash, by the rule `orphan_temps` applies."""
        return not self.writer_alive and self.age(now) >= min_age


def orphan_temps(temps: Iterable[TempFile], now: float, min_age: float) -> list[Decision]:
    """Temp files whose writer is gone and that nobody wrote for `min_age` s."""
    return [
        Decision(
            t.name,
            Cause.ORPHAN_TEMP,
            t.seen,
            {"sha": t.sha, "pid": t.pid, "size": t.seen.size, "age_s": max(0, round(t.age(now)))},
        )
        for t in sorted(temps, key=lambda t: t.name)
        if t.is_orphan(now, min_age)
    ]


def stale_format(index: Index, now: float) -> list[Decision]:
    """Indexed snapshots of payload ABI 0: invisible to current engines."""
    cols = index.columns()
    names = index.names
    rows = sorted(np.flatnonzero(cols["abi"] == ABI_LEGACY), key=lambda i: names[int(i)])
    return [decide(index.at(int(i)), Cause.STALE_FORMAT, now, abi=ABI_LEGACY) for i in rows]


def plan(temps: Iterable[TempFile], index: Index, now: float, *, orphans: bool,
         orphan_age: float, stale: bool) -> list[Decision]:  # fmt: skip
    """Everything the enabled cleanups would remove, temps first."""
    out: list[Decision] = []
    if orphans:
        out += orphan_temps(temps, now, orphan_age)
    if stale:
        out += stale_format(index, now)
    return out
