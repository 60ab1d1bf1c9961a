"""Replaying a trace (sim/tracereplay.py) on hand-written traces: what the
replay does at a session switch; the simulator's hook it drives kvgroomd's
deleter through."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvgroomd.core.decision import Decision, Result
from kvgroomd.core.groomer import Rules
from kvgroomd.format.header import Reason
from kvgroomd.sim import trace as fmt
from kvgroomd.sim import traceoutcome, tracereplay
from kvgroomd.sim.engine import EngineModel, EngineParams
from kvgroomd.sim.groom import SimGroomer
from kvgroomd.sim.memstore import MemStore
from kvgroomd.sim.texts import SegText
from kvgroomd.sim.traceoutcome import Outcome
from kvgroomd.sim.tracereplay import Setup, prepare, replay

MB = 10**6
T0 = 1_796_000_000


def _landing(t_ms: int, fid: str, reason: Reason, *, tokens: int, size: int,
             text_bytes: int) -> tuple[object, ...]:  # fmt: skip
    created = T0 + t_ms // 1000
    return (fmt.ADDED, t_ms, fid, int(reason), tokens, size, text_bytes, 0, 2, 32768, created,
            0, created, "")  # fmt: skip


def _switch_trace() -> fmt.Trace:
    """Session 1 saved A and left; session 2 saved B at a switch back to
    session 1, whose lookup hit A (the daemon saw the hit 50 ms after B), and
    whose prefill stored C, which extends A."""
    lines = [
        fmt.header_line(T0, "k", start=True),
        fmt.line(fmt.STATE, 0, 0),
        fmt.line(*_landing(0, "a", Reason.EVICT, tokens=2000, size=50 * MB, text_bytes=10_000)),
        fmt.line(*_landing(1000, "b", Reason.EVICT, tokens=2000, size=50 * MB, text_bytes=10_000)),
        fmt.line(fmt.UPDATED, 1050, "a", 1, T0 + 1, 50 * MB),
        fmt.line(*_landing(1060, "c", Reason.CONTINUED, tokens=4096, size=70 * MB,
                           text_bytes=20_000)),
        fmt.line(fmt.EXTENDS, 1060, "c", ["a"]),
    ]
    return fmt.read([("t.jsonl", lines)])


class TestSwitch:
    @pytest.mark.parametrize(("lag", "served"), [(tracereplay.DAEMON_LAG_S, 2000), (0.0, 0)])
    def test_the_lookup_after_a_save_comes_before_kvgroomd_hears_the_save(
            self, monkeypatch, lag, served):  # fmt: skip
        """kvgroomd's budget (90 MB) holds one of A and B: B's landing makes
        it remove A. Live, the engine looked the next prompt up right after
        saving B, before the daemon heard of B: A was hit first. The replay
        does the lookup at B's landing and lets kvgroomd hear B a moment
        later (without that moment, A is gone before the lookup)."""
        monkeypatch.setattr(tracereplay, "DAEMON_LAG_S", lag)
        prep = prepare(_switch_trace())
        assert prep.recorded.tokens_from_disk == 2000
        assert [lk.opened for lk in prep.lookups] == [2]  # B: after S and A
        out = replay(prep, Setup("x", Rules(budget=90 * MB, protect_new=0.2), None))
        assert out.tokens_from_disk == served


    def test_the_recording_shows_when_kvgroomd_was_first(self):
        """The same, but the recording shows kvgroomd unlinking A after B's
        landing and the lookup missing A, which its prompt extends: this
        time the daemon was first, and the replay keeps that order."""
        lines = [
            fmt.header_line(T0, "k", start=True),
            fmt.line(fmt.STATE, 0, 0),
            fmt.line(*_landing(0, "a", Reason.EVICT, tokens=2000, size=50 * MB, text_bytes=10_000)),
            fmt.line(*_landing(1000, "b", Reason.EVICT, tokens=2000, size=50 * MB, text_bytes=10_000)),
            fmt.line(fmt.DECIDED, 1003, "a", "budget", "unlinked", None),
            fmt.line(*_landing(1060, "c", Reason.CONTINUED, tokens=4096, size=70 * MB,
                               text_bytes=20_000)),
            fmt.line(fmt.EXTENDS, 1060, "c", ["a"]),
        ]
        prep = prepare(fmt.read([("t.jsonl", lines)]))
        assert prep.recorded.tokens_from_disk == 0
        assert [(lk.opened, lk.daemon_first) for lk in prep.lookups] == [(2, True)]
        out = replay(prep, Setup("x", Rules(budget=90 * MB, protect_new=0.2), None))
        assert out.tokens_from_disk == 0

    def test_one_lookups_evidence_is_one_chain(self):
        """After a switch, a session stores X1 and X2 (X2 extends X1); its save
        is skipped (too big), so the next request's store Y, unrelated and no
        longer, starts a lookup of its own (no save opened it)."""
        lines = [
            fmt.header_line(T0, "k", start=True),
            fmt.line(fmt.STATE, 0, 0),
            fmt.line(*_landing(0, "a", Reason.EVICT, tokens=2000, size=50 * MB, text_bytes=10_000)),
            fmt.line(*_landing(100, "x1", Reason.CONTINUED, tokens=4096, size=60 * MB,
                               text_bytes=20_000)),
            fmt.line(*_landing(200, "x2", Reason.CONTINUED, tokens=8192, size=90 * MB,
                               text_bytes=40_000)),
            fmt.line(fmt.EXTENDS, 200, "x2", ["x1"]),
            fmt.line(*_landing(300, "y", Reason.CONTINUED, tokens=4096, size=60 * MB,
                               text_bytes=20_000)),
        ]
        prep = prepare(fmt.read([("t.jsonl", lines)]))
        assert [(lk.wants.split(":")[1], lk.opened) for lk in prep.lookups] == [
            ("x2", 1), ("y", None)]


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


class TestEstimate:
    @pytest.mark.parametrize(("budgets", "recorded", "room"), [
        ((1600, None), (1600, None), "same"),
        ((3200, None), (1600, None), "more"),
        ((None, None), (1600, None), "more"),
        ((1600, 900), (1600, None), "less"),
        ((3200, 900), (1600, None), "mixed"),
        ((1200, 2000), (1600, 1000), "mixed"),
    ])  # fmt: skip
    def test_a_config_has_more_or_less_room_than_the_recorded(self, budgets, recorded, room):
        assert traceoutcome.room(budgets, recorded) == room

    def test_the_table_says_how_each_estimate_errs(self):
        """A tag per run, and under the table what each tag present means."""
        rec = Outcome("recorded", 100, 1, 2, 0, 0, 0, {}, 0, 0.0)
        runs = [replace(rec, label="a", room="same"), replace(rec, label="b", room="more"),
                replace(rec, label="c", room="more")]
        table = traceoutcome.format_table(rec, runs)
        lines = table.splitlines()
        assert lines[0].endswith("estimate")
        assert [line.rsplit("  ", 1)[-1] for line in lines[3:6]] == [
            "as recorded", "more room", "more room"]
        notes = "\n".join(lines[6:])
        assert notes.startswith("as recorded: ") and "\nmore room: " in notes
        assert "less room" not in notes
        assert runs[1].summary(rec)["estimate"]["room"] == "more"
        assert "estimate" not in rec.summary()
