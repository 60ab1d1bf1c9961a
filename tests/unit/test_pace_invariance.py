"""The default policy decides on the cache's own clock: the same traffic
replayed ten times faster or slower gets the same decisions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvgroomd.sim.agents import ADVERSARIAL, Interleaved, interleaved
from kvgroomd.sim.replay import DEFAULT, GroomParams, replay
from kvgroomd.sim.workload import Workload, requests, scale_time

GiB = 1 << 30
# The engine's own eviction decays hits over wall time (6 h): its choices
# depend on the pace. With room to spare (64 GiB) it never evicts, so every
# deletion below is kvgroomd's: its cap of 3 GiB does the work.
ROOMY = 64 * GiB
CAPPED = replace(DEFAULT, budget=3 * GiB)


def deletions(w: Workload, g: GroomParams) -> tuple[list[tuple[str, str]], int]:
    trace: list[tuple[object, ...]] = []
    r = replay(w, g, trace=trace)
    return [(str(e[1]), str(e[2])) for e in trace if e[0] == "delete"], r.tokens_saved


def roomy(w: Workload) -> Workload:
    return replace(w, engine=replace(w.engine, budget=ROOMY))


@pytest.mark.parametrize("make", [
    lambda: interleaved(1, Interleaved(budget=ROOMY)),
    lambda: interleaved(2, Interleaved(budget=ROOMY), pace="3000"),
    lambda: roomy(ADVERSARIAL["hot-anchor-flood"](1)),
], ids=["instant", "3000", "flood"])  # fmt: skip
def test_ten_times_faster_or_slower_decides_the_same(make: object) -> None:
    """Every unlink, by name, cause and order, is the same at 0.1x, 1x and 10x.
    The replay's daemon reacts `latency` after each store: scaled with the
    traffic, or a 10x faster replay lets the engine's next store land before
    the daemon acts where at 1x it does not (a race, not the policy's clock)."""
    w = make()  # type: ignore[operator]
    runs = [deletions(scale_time(w, k), replace(CAPPED, latency=CAPPED.latency * k))
            for k in (0.1, 1.0, 10.0)]  # fmt: skip
    assert runs[0][0], "the cap made kvgroomd decide something"
    assert all(c in ("budget", "superseded") for _, c in runs[0][0])
    assert runs[0] == runs[1] == runs[2]


def test_a_wall_clock_rule_would_not() -> None:
    """The check has teeth: protect_new (wall seconds) decides differently at
    another pace."""
    w = interleaved(2, Interleaved(budget=ROOMY), pace="3000")
    g = replace(CAPPED, protect_new=120.0)
    runs = [deletions(scale_time(w, k), g)[0] for k in (1.0, 10.0)]
    assert runs[0] != runs[1]


def test_scale_time_scales_arrivals() -> None:
    """scale_time multiplies every arrival and divides the speeds."""
    w = interleaved(3)
    slow = scale_time(w, 10.0)
    assert [r.at for r in requests(slow)] == pytest.approx([10 * r.at for r in requests(w)])
    assert slow.engine.prefill_tps == w.engine.prefill_tps / 10
