"""A full supersession sweep can be interrupted: the daemon must stop (and
feed systemd's watchdog) between the texts a sweep reads, and the core must
be left as it was, with nothing half decided."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from kvgroomd.core.facts import Loaded
from kvgroomd.core.groomer import Groomer, Rules
from kvgroomd.core.index import Snapshot
from kvgroomd.format.header import Reason
from kvgroomd.sim.groom import SimTexts
from tests.unit.builders import MemDisk, chat_text, indexed, snapshot

C = chat_text(40_000)


class Interrupted(Exception):  # noqa: N818 - a signal, as in groom.Stopped
    pass


class StopAfter:
    """A text source that raises after `n` texts, as the daemon's does on SIGTERM."""

    def __init__(self, disk: MemDisk, n: int) -> None:
        self.inner = SimTexts(disk)
        self.n = n
        self.read = 0

    def text(self, snap: Snapshot) -> bytes | None:
        return self.inner.text(snap)

    def texts(self, names: Any, lengths: Any, offsets: Any) -> Iterator[bytes | None]:
        for text in self.inner.texts(names, lengths, offsets):
            if self.read == self.n:
                raise Interrupted
            self.read += 1
            yield text

    def heads(self, names: Any) -> Loaded:
        return self.inner.heads(names)


def ladder(n: int) -> MemDisk:
    snaps = [snapshot(C[: 1000 * (i + 1)], reason=Reason.CONTINUED) for i in range(n)]
    return MemDisk(snaps, {s.name: C[: s.header.text_bytes] for s in snaps})


def test_a_stop_while_texts_are_read_leaves_the_core_untouched() -> None:
    """An exception from the text source ends the sweep at once: no decision,
    no file out of the index, and the next sweep does the whole job."""
    disk = ladder(30)
    core = Groomer(Rules(supersede=False))
    indexed(core, disk)
    core.reconfigure(Rules(supersede=True))
    before = sorted(core.index.names)
    stop = StopAfter(disk, 5)
    with pytest.raises(Interrupted):
        core.sweep(stop, 0.0)  # type: ignore[arg-type]
    assert stop.read == 5
    assert sorted(core.index.names) == before
    assert core.usage == core.index.total_bytes  # nothing pending
    assert not np.any(core.index.columns()["covered"])
    step = core.sweep(SimTexts(disk), 0.0)
    assert len(step.decisions) == 29  # every rung but the longest
