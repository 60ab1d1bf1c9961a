"""A full supersession sweep can be interrupted: the daemon must stop (and
feed systemd's watchdog) while one big bucket of same-head texts is planned."""

from __future__ import annotations

import pytest

from kvgroomd.core.index import Index
from kvgroomd.core.supersede import sweep_plan
from kvgroomd.format.header import Reason
from tests.unit.builders import chat_text, index_of, snapshot

C = chat_text(4_000)


class Interrupted(Exception):  # noqa: N818 - a signal, as in groom.Stopped
    pass


def same_head_index(n: int) -> Index:
    """n snapshots whose texts share their head (one bucket): C[:64+i]."""
    return index_of(*(snapshot(C[: 64 + i], reason=Reason.CONTINUED) for i in range(n)),
                    capacity=n)  # fmt: skip


def test_tick_is_called_while_one_bucket_is_planned() -> None:
    """sweep_plan calls `tick` once per 64 rows, also inside a single bucket."""
    calls = []
    sweep_plan(same_head_index(600), strict_quant=False, tick=lambda: calls.append(1))
    assert len(calls) == 600 // 64


def test_an_exception_from_tick_ends_the_plan() -> None:
    """An exception raised by `tick` (the daemon's stop request) ends sweep_plan at once."""
    def stop() -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        sweep_plan(same_head_index(300), strict_quant=False, tick=stop)
