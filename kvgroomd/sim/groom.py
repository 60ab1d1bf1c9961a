"""kvgroomd in the simulator: the decision core driven against the in-memory directory.

Pure (no files, no clock). `SimGroomer` plays the part of daemon/groom.py: it
hears what the engine model does to its directory (a store landed, a hit
touched a header, the engine removed a file), builds the same `Snapshot` the
daemon's reader would, asks the very `core.groomer.Groomer` the daemon runs,
carries out its decisions and settles them. It rescans on the daemon's
`reconcile_interval`, so covered flags and sweeps happen when they would live.
What the simulator predicts is therefore what the daemon decides.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from kvgroomd.core.decision import Decision, Fingerprint, Result
from kvgroomd.core.drift import Listing
from kvgroomd.core.facts import Loaded
from kvgroomd.core.groomer import Groomer, Rules, Step
from kvgroomd.core.index import NAME, Index, Snapshot
from kvgroomd.format.header import PREFIX_BYTES
from kvgroomd.format.prefix import FIRST_READ, tail_of, text_keys

_AVAILABLE = FIRST_READ - PREFIX_BYTES  # text bytes the daemon's first read holds

# `SimGroomer(before_unlink=...)`: given a decision about to be carried out and
# the time, the result to settle it with instead, or None to carry it out.
BeforeUnlink = Callable[[Decision, float], Result | None]


class Disk(Protocol):
    """What the simulator's directory offers kvgroomd (sim/replay.Directory)."""

    index: Index  # the engine's view: every file's header and fingerprint

    def raw(self, name: str) -> bytes:
        """The rendered text of `name`."""

    def remove(self, name: str, cause: str, now: float) -> None:
        """kvgroomd unlinks `name`; `cause` says why."""


Keys = tuple[int, int, int, npt.NDArray[np.uint64]]  # head, bkey, tail, probes
_KEYS: dict[str, Keys] = {}  # by name: a name is the SHA-1 of its text, so keys never change


def _keys(disk: Disk, name: str) -> Keys:
    keys = _KEYS.get(name)
    if keys is None:
        raw = disk.raw(name)
        head, bkey, probes = text_keys(raw[:_AVAILABLE], len(raw))
        keys = _KEYS[name] = (head, bkey, tail_of(raw, len(raw)), probes)
        if len(_KEYS) > 1 << 16:  # a bounded memo: drop the oldest half
            for old in list(_KEYS)[: 1 << 15]:
                del _KEYS[old]
    return keys


def snapshot_of(disk: Disk, name: str) -> Snapshot | None:
    """The Snapshot daemon/read.py would build of `name`: header, identity and
    the text keys of its first read."""
    snap = disk.index.get(name)
    if snap is None:
        return None
    head, bkey, tail, _probes = _keys(disk, name)
    return replace(snap, head=head, bkey=bkey, tail=tail, covered=False)


class SimTexts:
    """The core's text source over the simulator's directory (core/groomer.Texts)."""

    def __init__(self, disk: Disk) -> None:
        self.disk = disk

    def text(self, snap: Snapshot) -> bytes | None:
        now = self.disk.index.get(snap.name)
        if now is None or now.seen != snap.seen:
            return None
        return self.disk.raw(snap.name)

    def texts(self, names: npt.NDArray[np.bytes_], lengths: npt.NDArray[np.integer[Any]],
              offsets: npt.NDArray[np.integer[Any]]) -> Iterator[bytes | None]:  # fmt: skip
        del offsets  # texts are kept apart from headers here
        for b, n in zip(names.tolist(), lengths.tolist(), strict=True):
            name = b.decode()
            yield self.disk.raw(name)[:n] if name in self.disk.index else None

    def heads(self, names: npt.NDArray[np.bytes_]) -> Loaded:
        snaps = [s for s in (snapshot_of(self.disk, b.decode()) for b in names.tolist()) if s]
        scratch = Index(len(snaps) + 1)
        probe_rows, probe_keys = [], []
        for i, s in enumerate(snaps):
            scratch.put(s)
            keys = _keys(self.disk, s.name)[3]
            probe_rows += [i] * len(keys)
            probe_keys.append(keys & np.uint64(0xFFFFFFFF))
        return Loaded(scratch.columns().copy(), np.array([s.name.encode() for s in snaps],
                                                         dtype=NAME), [], [],
                      np.array(probe_rows, dtype=np.int32),
                      np.concatenate(probe_keys).astype(np.uint32) if probe_keys
                      else np.zeros(0, np.uint32))  # fmt: skip


class SimGroomer:
    """The core, hearing the simulated engine's directory as the daemon hears a real one.

    `before_unlink` is the replay's hook into the deleter's part (`BeforeUnlink`).
    """

    def __init__(self, rules: Rules, disk: Disk, *, reconcile_interval: float = 300.0,
                 latency: float = 0.0,
                 before_unlink: BeforeUnlink | None = None) -> None:  # fmt: skip
        self.core = Groomer(rules)
        # Asked before each unlink (not in a dry run) what the deleter would
        # find instead: a replayed trace knows the engine used a file just
        # before kvgroomd's unlink reached it (sim/tracereplay.py), so the
        # unlink loses there as it did live (Result.GONE, Result.CHANGED).
        self.before_unlink = before_unlink
        # The daemon hears a change this long after it happens (inotify, then
        # reading the file): what the engine does meanwhile (the lookup right
        # after an evict save, the rest of a burst of stores) comes first.
        self.latency = latency
        self.disk = disk
        self.texts = SimTexts(disk)
        self.reconcile_interval = reconcile_interval
        self._next_rescan: float | None = None
        self._events: deque[tuple[str, str, float]] = deque()
        self._busy = False
        # What kvgroomd unlinked, in order: (name, cause) — the simulator's
        # counterpart of the daemon's snapshot.unlinked lines.
        self.unlinked: list[tuple[str, str]] = []

    # -- what the engine model reports (as inotify would) ------------------------

    def landed(self, name: str, now: float) -> None:
        """A file was renamed into place, or its header rewritten (a hit)."""
        self._events.append(("landed", name, now + self.latency))
        self._drain(now)

    def gone(self, name: str, now: float) -> None:
        """A file left the directory."""
        self._events.append(("gone", name, now + self.latency))
        self._drain(now)

    def advance(self, now: float) -> float:
        """Time reached `now`: hear what happened until then. Returns `now`
        (the engine model's wait hook: kvgroomd acts between its actions)."""
        self._drain(now)
        return now

    def tick(self, now: float) -> None:
        """Time passed with no event (the daemon's timers)."""
        self._drain(now)
        self._rescan_if_due(now)
        self._run(self.core.tick(now), now)

    def reconfigure(self, rules: Rules, now: float) -> None:
        """A reload (e.g. the operator lowered the budget), then its rescan."""
        self.core.reconfigure(rules)
        self.rescan(now)

    def rescan(self, now: float) -> None:
        """The daemon's periodic reconcile: list, repair drift, sweep, budget."""
        self._next_rescan = now + self.reconcile_interval
        listing = Listing.of({n: self.disk.index.fingerprint(n) or Fingerprint(0, 0, 0, 0)
                              for n in self.disk.index.names})  # fmt: skip
        d = self.core.drift(listing)
        loaded = self.texts.heads(d.to_read)
        step, _repairs = self.core.rescanned(d, loaded, self.texts, now, listed=listing.names)
        self._run(step, now)

    # -- internals -----------------------------------------------------------------

    def _drain(self, upto: float = math.inf) -> None:
        if self._busy:
            return  # an event caused by our own unlink: handled after this step
        self._busy = True
        try:
            while self._events and self._events[0][2] <= upto:
                kind, name, now = self._events.popleft()
                self._rescan_if_due(now)
                if kind == "gone":
                    self._run(self.core.gone(name), now)
                    continue
                snap = snapshot_of(self.disk, name)
                step = self.core.gone(name) if snap is None else self.core.landed(
                    snap, self.texts, now)  # fmt: skip
                self._run(step, now)
        finally:
            self._busy = False

    def _rescan_if_due(self, now: float) -> None:
        if self._next_rescan is None:
            self._next_rescan = now + self.reconcile_interval
        elif now >= self._next_rescan:
            self.rescan(now)

    def _run(self, step: Step, now: float) -> None:
        for d in step.decisions:
            result = self._apply(d, now)
            self.core.settle(d, result)  # notes are for a log: none here
            if result is Result.CHANGED:  # the daemon reads it again: so do we
                self._events.append(("landed", d.name, now))

    def _apply(self, d: Decision, now: float) -> Result:
        """daemon/apply.py's part: unlink if still the version judged."""
        if self.core.rules.dry_run:
            return Result.WOULD_UNLINK
        if self.before_unlink is not None and (instead := self.before_unlink(d, now)) is not None:
            return instead
        current = self.disk.index.fingerprint(d.name)
        if current is None:
            return Result.GONE
        if current != d.seen:
            return Result.CHANGED
        self.disk.remove(d.name, str(d.cause), now)
        self.unlinked.append((d.name, str(d.cause)))
        return Result.UNLINKED
