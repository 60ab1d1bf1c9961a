"""The daemon's timers (daemon/_timers.py) run on the clock they are given."""

from __future__ import annotations

from kvgroomd.daemon._timers import Timers


class FakeMono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_deadlines_fall_due_pend_and_cancel() -> None:
    """A timer is pending until its time, then due; wait() is the nearest one."""
    mono = FakeMono()
    timers = Timers(mono)
    assert timers.wait() is None
    timers.start("ping", 5)
    timers.start("reconcile", 300)
    assert timers.pending("ping") and not timers.due("ping")
    assert timers.wait() == 5
    mono.t += 5
    assert timers.due("ping") and not timers.pending("ping")
    assert timers.wait() == 0
    timers.cancel("ping")
    assert not timers.due("ping") and not timers.pending("ping")
    assert timers.wait() == 295


def test_an_unset_timer_is_neither_due_nor_pending() -> None:
    """A name never started is not due (nothing to do) and not pending."""
    timers = Timers(FakeMono())
    assert not timers.due("budget") and not timers.pending("budget")
