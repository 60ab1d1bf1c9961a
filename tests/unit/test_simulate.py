"""Tests for the workload model, the simulator and its targets (kvgroomd.sim.replay)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kvgroomd.core import evict as evict_module
from kvgroomd.core import limits as limits_module
from kvgroomd.format.header import EXT_TOOL_MAP, sha1_hex
from kvgroomd.sim import cli as simulate
from kvgroomd.sim import replay as sim_replay
from kvgroomd.sim.engine import EngineModel, EngineParams, MiB
from kvgroomd.sim.memstore import MemStore
from kvgroomd.sim.month import mixed_month
from kvgroomd.sim.replay import DEFAULT, GroomParams, compare, replay
from kvgroomd.sim.report import Report
from kvgroomd.sim.server import Server
from kvgroomd.sim.texts import EMPTY, Text, is_prefix, render, tokens_of, truncate
from kvgroomd.sim.workload import (
    WorkloadError,
    load_workload,
    parse_workload,
    requests,
)

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
SPEC_CASES = (
    "nested-ladder",
    "store-then-self-evict",
    "small-prefixes-first",
    "cold-anchor-evicted",
    "anchors-busy-neighbour",
    "shutdown-dump-evicted",
    "dead-evict-keys",
    "consumed-on-load",
    "budget-cut",
)


def workload(**top: object):
    """A workload from a YAML-shaped mapping."""
    return parse_workload({"name": "t", **top})


def stores(trace: list[tuple[object, ...]]) -> list[tuple[str, int]]:
    """(reason, tokens) of every store in a trace."""
    return [(str(e[3]), int(e[4])) for e in trace if e[0] == "store"]  # type: ignore[call-overload]


class TestTexts:
    """Texts are segments of token streams; prefixes behave like byte prefixes."""

    A: Text = ((1, 100), (2, 50))

    def test_truncate_and_count(self) -> None:
        """Truncating keeps the first tokens, splitting a segment if needed."""
        assert truncate(self.A, 120) == ((1, 100), (2, 20))
        assert tokens_of(truncate(self.A, 120)) == 120

    def test_prefix_rules(self) -> None:
        """A text is a prefix of its extensions and not of a diverging text."""
        assert is_prefix(truncate(self.A, 120), self.A)
        assert is_prefix(self.A, self.A)
        assert not is_prefix(self.A, ((1, 100), (3, 50)))
        assert not is_prefix(((1, 101),), self.A)

    def test_render_keeps_prefix_relation(self) -> None:
        """Rendered bytes are a byte prefix exactly when the text is a prefix."""
        whole = render(self.A)
        assert whole.startswith(render(truncate(self.A, 120)))
        assert not whole.startswith(render(((1, 100), (3, 10))))
        assert not render(((1, 100), (3, 10))).startswith(render(((1, 101),)))

    def test_sha_is_of_rendered_bytes(self) -> None:
        """Two texts with the same segments get the same key; different ones do not."""
        assert sha1_hex(render(self.A)) == sha1_hex(render(((1, 100), (2, 50))))
        assert sha1_hex(render(self.A)) != sha1_hex(render(truncate(self.A, 149)))


class TestWorkload:
    """YAML workloads become requests with exact prompts."""

    def test_turns_extend_the_conversation(self) -> None:
        """Each turn's prompt extends the previous prompt and the reply sent back."""
        w = workload(
            texts={"sys": 600},
            sessions=[
                {
                    "id": "a",
                    "system": "sys",
                    "turns": 3,
                    "first": 700,
                    "user": 100,
                    "reply": 50,
                    "gap": "1m",
                }
            ],
        )
        r = requests(w)
        assert [q.at for q in r] == [0, 60, 120]
        assert is_prefix((*r[0].prompt, r[0].reply), r[1].prompt)
        assert tokens_of(r[2].prompt) == 600 + 700 + 50 + 100 + 50 + 100
        assert r[0].anchor == 600

    def test_tool_replies_are_not_sent_back(self) -> None:
        """A tool session's next prompt does not contain the sampled reply."""
        w = workload(sessions=[{"id": "a", "turns": 2, "first": 900, "tools": True}])
        r = requests(w)
        assert not is_prefix((*r[0].prompt, r[0].reply), r[1].prompt)
        assert r[1].tools_from == 900

    def test_fork_shares_the_prefix_before_a_turn(self) -> None:
        """A fork starts from its source's text just before the given turn."""
        w = workload(
            sessions=[
                {"id": "a", "turns": 3, "first": 900, "gap": "10m"},
                {"id": "b", "start": "1h", "fork": {"session": "a", "turn": 2}, "first": 40},
            ]
        )
        a1, _, _, b1 = requests(w)
        assert is_prefix((*a1.prompt, a1.reply), b1.prompt)
        assert b1.session == "b"

    def test_count_repeats_a_session(self) -> None:
        """`count` and `every` start copies of a session at intervals."""
        w = workload(sessions=[{"id": "c", "count": 3, "every": "1h30m", "start": "1d"}])
        assert [(s.id, s.start) for s in w.sessions] == [
            ("c.0", 86400),
            ("c.1", 91800),
            ("c.2", 97200),
        ]

    @pytest.mark.parametrize(
        ("top", "key"),
        [
            ({"sessions": [{"id": "a", "turns": "many"}]}, "sessions.a.turns"),
            ({"sessions": [{"id": "a", "system": "nope"}]}, "sessions.a.system"),
            ({"sessions": [{"id": "a", "colour": 1}]}, "sessions[0].colour"),
            ({"sessions": [{"id": "a", "fork": {"session": "z"}}]}, "sessions.a.fork.session"),
            ({"engine": {"budget": "lots"}}, "engine.budget"),
            ({"restarts": [{"budget": "1GiB"}]}, "restarts[0].at"),
            ({"sessions": [{"id": "a", "gap": "soon"}]}, "sessions.a.gap"),
        ],
    )
    def test_errors_name_the_key(self, top: dict[str, object], key: str) -> None:
        """A bad value is reported with the key it is under."""
        with pytest.raises(WorkloadError, match="^" + re.escape(key) + ":"):
            workload(**top)

    def test_mixed_month_is_seeded(self) -> None:
        """The same seed gives the same month; another seed another one."""
        assert requests(mixed_month(3, days=5)) == requests(mixed_month(3, days=5))
        assert requests(mixed_month(3, days=5)) != requests(mixed_month(4, days=5))

    def test_scenario_library_loads(self) -> None:
        """Every spec §6 case and the mixed month has a scenario with a comment header."""
        for name in (*SPEC_CASES, "mixed-month"):
            path = SCENARIOS / f"{name}.yaml"
            assert path.read_text().startswith("# ")
            assert load_workload(path).name == name


class TestEngine:
    """The engine model stores, looks up and evicts as ds4-server does (spec §3)."""

    def test_nested_ladder(self) -> None:
        """A 49k-token prefill stores continued files at each 10240 frontier, then an evict save."""
        w = workload(
            engine={"budget": "64GiB"},
            sessions=[
                {"id": "a", "first": 48900, "reply": 122},
                {"id": "b", "start": "1h", "first": 600},
            ],
        )
        trace: list[tuple[object, ...]] = []
        replay(w, None, trace=trace)
        assert stores(trace) == [
            ("continued", 10240),
            ("continued", 20480),
            ("continued", 30720),
            ("continued", 40960),
            ("evict", 49022),
            ("cold", 600),
        ]

    def test_cold_at_anchor_or_trimmed_length(self) -> None:
        """A cold store lands at the chat anchor if it has 512 tokens, else trimmed and aligned."""
        w = workload(
            engine={"budget": "64GiB"},
            texts={"sys": 5343, "tiny": 100},
            sessions=[
                {"id": "a", "system": "sys", "first": 1700},
                {"id": "b", "start": "1h", "system": "tiny", "first": 6900},
            ],
        )
        trace: list[tuple[object, ...]] = []
        replay(w, None, trace=trace)
        assert [s for s in stores(trace) if s[0] == "cold"] == [("cold", 5343), ("cold", 6144)]

    def test_lookup_takes_longest_prefix_and_counts_tokens(self) -> None:
        """A returning chat is served its own evict save; every live miss is a lookup."""
        w = workload(
            engine={"budget": "64GiB"},
            sessions=[
                {"id": "a", "turns": 2, "first": 3000, "reply": 100, "gap": "1h"},
                {"id": "b", "start": "10m", "first": 2000},
            ],
        )
        r = replay(w, None)
        assert (r.hits, r.lookups, r.tokens_saved) == (1, 3, 3100)

    def test_hit_over_cold_max_consumes(self) -> None:
        """A hit on a snapshot over cold_max_tokens unlinks it; a smaller one is touched."""
        w = workload(
            engine={"budget": "64GiB"},
            texts={"doc": 40000},
            sessions=[{"id": "q", "context": "doc", "count": 3, "every": "1h", "first": 100}],
        )
        trace: list[tuple[object, ...]] = []
        r = replay(w, None, trace=trace)
        hits = [(e[3], e[4]) for e in trace if e[0] == "hit"]
        assert hits == [("continued", 30720), ("continued", 20480)]
        assert r.deleted == {"consumed": 1}

    def test_engine_keeps_under_budget_before_storing(self) -> None:
        """The engine evicts before writing, so the directory never exceeds its budget."""
        w = workload(
            engine={"budget": "1GiB"},
            sessions=[{"id": "s", "count": 12, "every": "10m", "first": 9000}],
        )
        r = replay(w, None)
        assert 0 < r.peak_bytes <= 1 << 30
        assert r.deleted["engine"] > 0
        assert float(r.timeline[:, 1].max()) <= 1 << 30

    def test_engine_evicts_lowest_score_first(self) -> None:
        """A never-hit continued file goes before a cold anchor that was hit."""
        w = workload(
            engine={"budget": "700MiB"},
            texts={"sys": 5343},
            sessions=[
                {"id": "t", "system": "sys", "count": 2, "every": "5m", "first": 700},
                {"id": "long", "start": "20m", "first": 21000},
                {"id": "u", "start": "40m", "first": 800},
            ],
        )
        trace: list[tuple[object, ...]] = []
        replay(w, None, trace=trace)
        gone = [(e[3], e[4]) for e in trace if e[0] == "delete"]
        assert ("cold", 5343) not in gone
        assert gone[0] == ("continued", 10240)

    def test_restart_saves_and_applies_new_budget(self) -> None:
        """A restart stores a shutdown save, then start-up eviction meets the new budget."""
        w = workload(
            engine={"budget": "8GiB"},
            restarts=[{"at": "2h", "budget": "1GiB"}],
            sessions=[
                {"id": "s", "count": 8, "every": "10m", "first": 12000},
                {"id": "after", "start": "3h", "first": 600},
            ],
        )
        trace: list[tuple[object, ...]] = []
        r = replay(w, None, trace=trace)
        assert ("shutdown", 12400) in stores(trace)
        assert float(r.timeline[-1, 1]) <= 1 << 30

    def test_tool_sessions_mark_saves_with_a_tool_map(self) -> None:
        """Saves past a tool session's first reply carry the tool-id map flag."""
        w = workload(
            engine={"budget": "64GiB"},
            sessions=[
                {"id": "a", "turns": 2, "tools": True, "first": 900, "gap": "1m"},
                {"id": "b", "start": "10m", "first": 700},
            ],
        )
        disk = MemStore()
        server = Server(EngineModel(disk, w.engine, budget=w.engine.budget), EMPTY)
        for r in requests(w):
            server.serve(r.as_turn(), r.at)
        flags = {
            disk.index.at(i).header.reason.label: int(disk.index.columns()[i]["ext_flags"])
            for i in range(len(disk.index))
        }
        assert flags == {"cold": 0, "evict": EXT_TOOL_MAP}


class TestKvgroomdSide:
    """With kvgroomd, the daemon's own supersede/evict code acts after each store."""

    def test_supersession_keeps_one_per_chain(self) -> None:
        """The ladder's shorter continued files are unlinked as superseded, never hit."""
        w = workload(
            engine={"budget": "64GiB"},
            sessions=[
                {"id": "a", "first": 48900, "reply": 122},
                {"id": "b", "start": "1h", "first": 600},
            ],
        )
        r = replay(w, GroomParams(budget=None))
        assert r.deleted == {"superseded": 3}
        assert r.bytes_deleted_unhit == sum(EngineParams().size(n) for n in (10240, 20480, 30720))

    def test_kvgroomd_keeps_room_for_the_next_store(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Told the engine's budget, kvgroomd keeps the room the next store
        needs (here: the size of the recent stores), counting as room the
        files it chose that the engine would evict first (core/evict.py
        `plan`): the engine evicts those and nothing else."""
        left: set[str] = set()
        plan = limits_module.plan

        def spy(*args: object, **kw: object) -> evict_module.Choice:
            choice = plan(*args, **kw)  # type: ignore[arg-type]
            left.update(choice.left)
            return choice

        monkeypatch.setattr(limits_module, "plan", spy)
        w = workload(
            engine={"budget": "2GiB"},
            sessions=[{"id": "s", "count": 40, "every": "10m", "first": 9000}],
        )
        trace: list[tuple[object, ...]] = []
        r = replay(w, DEFAULT, trace=trace)
        assert r.deleted["budget"] > 0 and left
        assert {str(e[1]) for e in trace if e[0] == "delete" and e[2] == "engine"} <= left
        assert r.peak_bytes <= 2 << 30
        limit = r.timeline[5:, 4]  # kvgroomd's limit, once stores of both sizes were seen
        assert (limit <= 2 << 30).all()
        assert (limit >= (2 << 30) - 2 * EngineParams().size(9400)).all()  # and no lower

    def test_a_fixed_headroom_cap_holds(self) -> None:
        """budget="auto" (the engine's budget minus the workload's headroom, the
        old recommendation) caps usage too."""
        w = workload(
            engine={"budget": "2GiB"},
            headroom="300MiB",
            sessions=[{"id": "s", "count": 40, "every": "10m", "first": 9000}],
        )
        r = replay(w, GroomParams(budget="auto", engine_budget=False))
        assert "engine" not in r.deleted
        assert r.peak_bytes <= (2 << 30) - 300 * MiB + EngineParams().size(9400)

    def test_default_headroom_fits_a_cold_max_store(self) -> None:
        """Automatic headroom fits a cold_max_tokens + one step store, at most a quarter."""
        e = EngineParams(budget=64 << 30)
        assert sim_replay.default_headroom(e) == e.size(30000 + 10240)
        assert sim_replay.default_headroom(replace(e, budget=1 << 30)) == 1 << 28

    def test_unknown_policy_rejected(self) -> None:
        """Asking for a policy that does not exist is an error, not a silent default."""
        with pytest.raises(ValueError, match="unknown policy"):
            replay(workload(sessions=[{"id": "a"}]), GroomParams(policy="lru"))


class TestReport:
    """A run reports tokens saved, hit rate, bytes written and bytes deleted unhit."""

    def test_counts_add_up(self) -> None:
        """Bytes written are the sizes of all stores; the timeline ends at the totals."""
        w = load_workload(SCENARIOS / "nested-ladder.yaml")
        trace: list[tuple[object, ...]] = []
        r = replay(w, None, trace=trace)
        assert r.bytes_written == sum(int(e[5]) for e in trace if e[0] == "store")  # type: ignore[call-overload]
        assert r.timeline[-1, 2] == r.tokens_saved
        assert r.hit_rate == pytest.approx(r.hits / r.lookups)
        assert np.all(np.diff(r.timeline[:, 0]) >= 0)

    def test_consumed_files_are_not_unhit(self) -> None:
        """A file consumed by its hit does not count as deleted without a hit."""
        w = workload(
            engine={"budget": "64GiB"},
            texts={"doc": 40000},
            sessions=[{"id": "q", "context": "doc", "count": 2, "every": "1h", "first": 100}],
        )
        assert replay(w, None).bytes_deleted_unhit == 0


@pytest.fixture(scope="module")
def reports() -> dict[str, Report]:
    """Every scenario replayed: engine alone, ds4+supersede, default."""
    return {p.stem: compare(load_workload(p)) for p in sorted(SCENARIOS.glob("*.yaml"))}


@pytest.mark.slow
class TestTargets:
    """The issue's targets on the scenario library, at equal engine budget
    (~40 s: `pytest -m slow`; CI runs it after the default suite)."""

    def test_library_complete(self, reports: dict[str, Report]) -> None:
        """The library holds every spec §6 case and the mixed month."""
        assert set(reports) >= {*SPEC_CASES, "mixed-month"}

    def test_default_beats_engine_everywhere(self, reports: dict[str, Report]) -> None:
        """The default policy saves more prefill tokens than the engine alone in every scenario."""
        worse = {
            k: (r.run("default").tokens_saved, r.run("engine alone").tokens_saved)
            for k, r in reports.items()
            if r.run("default").tokens_saved <= r.run("engine alone").tokens_saved
        }
        assert worse == {}

    def test_mixed_month_ratio(self, reports: dict[str, Report]) -> None:
        """On the mixed month the default saves at least 1.5x the engine's tokens."""
        r = reports["mixed-month"]
        assert r.run("default").tokens_saved >= 1.5 * r.run("engine alone").tokens_saved

    def test_default_never_below_ds4_with_supersession(
        self, reports: dict[str, Report]
    ) -> None:
        """The default policy never saves fewer tokens than the ds4 score with supersession."""
        worse = {
            k: (r.run("default").tokens_saved, r.run("ds4+supersede").tokens_saved)
            for k, r in reports.items()
            if r.run("default").tokens_saved < r.run("ds4+supersede").tokens_saved
        }
        assert worse == {}


class TestMain:
    """`kvgroomd simulate` prints a table or JSON and can draw the plot."""

    def test_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--json prints one entry per run with the report's figures."""
        assert simulate.main([str(SCENARIOS / "nested-ladder.yaml"), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert [r["label"] for r in out["runs"]] == ["engine alone", "ds4+supersede", "default"]
        assert {"tokens_saved", "hit_rate", "gib_written", "gib_deleted_unhit"} <= set(
            out["runs"][0]
        )

    def test_table_budget_and_policy(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--budget sets the engine budget of every run; --policy names the run tried."""
        argv = [str(SCENARIOS / "nested-ladder.yaml"), "--budget", "8GiB", "--policy", "ds4"]
        assert simulate.main(argv) == 0
        out = capsys.readouterr().out
        assert "engine budget 8.00 GiB" in out
        assert out.splitlines()[-1].startswith("ds4 ")

    def test_config(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--config takes policy parameters and kvgroomd's budget from a config file."""
        cfg = tmp_path / "kvgroomd.yaml"
        cfg.write_text(
            "cache_dir: /var/cache/ds4\nbudget: 3GiB\npolicy:\n  name: prefill\n  prior_cold: 4\n"
        )
        assert simulate.main([str(SCENARIOS / "nested-ladder.yaml"), "--config", str(cfg)]) == 0
        assert capsys.readouterr().out.splitlines()[-1].startswith("config ")

    def test_plot(self, tmp_path: Path) -> None:
        """--plot writes a PNG."""
        png = tmp_path / "run.png"
        assert simulate.main([str(SCENARIOS / "nested-ladder.yaml"), "--plot", str(png)]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_bad_workload(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A workload error is printed with its key and exits 2."""
        bad = tmp_path / "bad.yaml"
        bad.write_text("sessions:\n  - {id: a, turns: -1}\n")
        assert simulate.main([str(bad)]) == 2
        assert "sessions.a.turns" in capsys.readouterr().err
