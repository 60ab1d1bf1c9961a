"""The room kept for the engine's next store (core/headroom.py), pure."""

from __future__ import annotations

from kvgroomd.core.headroom import Headroom


def test_the_largest_recent_store_plus_what_the_engine_had_to_evict() -> None:
    """The room is the largest of the recent stores, plus the bytes the engine
    evicted by itself before one of them (not what was consumed by a hit)."""
    h = Headroom(consume_tokens=30_000)
    for size in (100, 300, 200):
        h.landed(size)
    assert h.need() == 300
    h.gone(50, 1000)
    h.gone(500, 40_000)  # consumed on load: not an eviction
    h.landed(100)
    assert h.need() == 300 + 50


def test_a_demoted_rung_the_next_store_extends_is_not_room_missed() -> None:
    """Current engines demote the `continued` file the incoming one extends and
    evict it first whenever they evict: a rung gone just before a longer
    file of the same text head lands is not counted; another file's is."""
    h = Headroom(consume_tokens=30_000)
    h.landed(100, head=7, tokens=10_240)
    h.gone(100, 10_240, rung_head=7)
    h.landed(200, head=7, tokens=20_480)
    assert h.need() == 200
    h.gone(200, 20_480, rung_head=7)
    h.landed(150, head=9, tokens=15_000)  # another text: room was missing
    assert h.need() == 200 + 200
