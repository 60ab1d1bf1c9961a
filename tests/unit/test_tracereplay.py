"""Replaying a trace (sim/tracereplay.py): the simulator's hook it drives
kvgroomd's deleter through."""

from __future__ import annotations

import pytest

from kvgroomd.core.decision import Decision, Result
from kvgroomd.core.groomer import Rules
from kvgroomd.format.header import Reason
from kvgroomd.sim.engine import EngineModel, EngineParams
from kvgroomd.sim.groom import SimGroomer
from kvgroomd.sim.memstore import MemStore
from kvgroomd.sim.texts import SegText


class TestBeforeUnlink:
    @pytest.mark.parametrize("instead", [Result.GONE, None])
    def test_the_hook_says_what_the_deleter_found_instead(self, instead):
        """kvgroomd decides to unlink a file over its budget; the hook says the
        engine used it first (GONE): nothing is unlinked, the file stays. When
        the hook says nothing (None), it is unlinked."""
        asked: list[str] = []

        def before(d: Decision, now: float) -> Result | None:
            asked.append(d.name)
            return instead

        disk = MemStore()
        groomer = SimGroomer(Rules(budget=1), disk, before_unlink=before)
        disk.watcher = groomer
        _what, name = EngineModel(disk, EngineParams(), budget=None).store(
            SegText(((1, 1000),), 1000), 1000, Reason.EVICT, 0.0)
        assert asked == [name]
        assert (name in disk) == (instead is not None)
        assert groomer.unlinked == ([] if instead else [(name, "budget")])
