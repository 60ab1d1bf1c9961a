"""The interleaved-agent generator and the adversarial workloads (kvgroomd.sim.agents)."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest

from kvgroomd.sim import cli
from kvgroomd.sim.agents import ADVERSARIAL, PACES, Interleaved, interleaved
from kvgroomd.sim.generate import load_source
from kvgroomd.sim.replay import replay
from kvgroomd.sim.report import parse_seeds
from kvgroomd.sim.workload import WorkloadError, parse_workload, requests

GiB = 1 << 30
MiB = 1 << 20


def sessions_of(w: object) -> Counter[str]:
    return Counter(r.session for r in requests(w))  # type: ignore[arg-type]


class TestInterleaved:
    def test_seeded(self) -> None:
        """The same seed gives the same requests; another seed others."""
        assert requests(interleaved(3)) == requests(interleaved(3))
        assert requests(interleaved(3)) != requests(interleaved(4))

    def test_the_issues_shape(self) -> None:
        """Defaults: 80 requests, 8 conversations on one 5,000-token prompt (3 of
        them tool sessions), 4 one-shot documents of 35-60k tokens, turns and
        replies in the issue's ranges, a switch on most requests."""
        w = interleaved(1)
        reqs = requests(w)
        assert len(reqs) == 80
        convs = [s for s in w.sessions if s.system == "agent-sys"]
        docs = [s for s in w.sessions if s.context is not None]
        assert len(convs) == 8 and sum(s.tools for s in convs) == 3
        assert len(docs) == 4 and all(35_000 <= w.texts[s.context] <= 60_000 for s in docs)
        assert w.texts["agent-sys"] == 5000
        for s in convs:
            assert 300 <= s.first <= 2500 and all(200 <= x <= 1500 for x in s.reply)
        conv_reqs = [r for r in reqs if r.session.startswith("c")]
        switches = sum(a.session != b.session for a, b in itertools.pairwise(conv_reqs))
        assert switches / (len(conv_reqs) - 1) > 0.6
        assert [r.at for r in reqs] == pytest.approx([i * 0.2 for i in range(80)])

    def test_parameters(self) -> None:
        """Each parameter shapes the workload it names."""
        p = Interleaved(conversations=3, tool_share=0.0, system=700, requests=30, switch=0.0,
                        documents=0, user=(100, 100), reply=(50, 50))  # fmt: skip
        w = interleaved(2, p)
        reqs = requests(w)
        assert len(reqs) == 30 and w.texts["agent-sys"] == 700
        assert len({r.session for r in reqs}) == 1  # never switches
        assert reqs[-1].tokens == 700 + 100 + 29 * (50 + 100)
        many = interleaved(2, Interleaved(documents=None, doc_share=1.0, doc_questions=1))
        assert all(s.context is not None for s in many.sessions)

    def test_questions_per_document(self) -> None:
        """With several questions per document, later requests start from it again."""
        w = interleaved(5, Interleaved(documents=3, doc_questions=3, requests=200))
        per_doc = Counter(s.context for s in w.sessions if s.context)
        assert set(per_doc.values()) == {3}

    def test_yaml_and_errors(self) -> None:
        """`generate: {kind: interleaved, ...}` takes the generator's fields; errors name them."""
        w = parse_workload({"generate": {"kind": "interleaved", "seed": 2, "conversations": 4,
                                         "user": [100, 200], "pace": "3000"}})  # fmt: skip
        assert len({s.id for s in w.sessions if s.system}) <= 4
        assert w.engine.prefill_tps == 3000.0
        with pytest.raises(WorkloadError, match=r"^generate\.colour: unknown key"):
            parse_workload({"generate": {"kind": "interleaved", "colour": 1}})
        with pytest.raises(WorkloadError, match=r"^generate\.pace:"):
            parse_workload({"generate": {"kind": "interleaved", "pace": "ludicrous"}})
        with pytest.raises(WorkloadError, match=r"^generate\.kind:"):
            parse_workload({"generate": {"kind": "nope"}})


class TestAdversarial:
    @pytest.mark.parametrize("kind", sorted(ADVERSARIAL))
    def test_each_replays(self, kind: str) -> None:
        """Every adversarial workload is seeded and replays with and without a budget."""
        w = ADVERSARIAL[kind](1)
        assert requests(w) == requests(ADVERSARIAL[kind](1))
        alone, unbounded = replay(w, None), replay(w, None, unbounded=True)
        assert 0 <= alone.share <= unbounded.share + 1e-9 <= 1.0 + 1e-9

    def test_what_each_stresses(self) -> None:
        """The generators do what their names say."""
        shared = ADVERSARIAL["shared-prompt-documents"](2)
        assert {s.system for s in shared.sessions} == {"agent-sys"}
        bursty = ADVERSARIAL["bursty-documents"](2)
        assert sum(1 for s in bursty.sessions if s.context) >= 2 * 3 * 3
        tiny = ADVERSARIAL["tiny-anchors"](2)
        assert sum(1 for t, n in tiny.texts.items() if t.startswith("sys-") and n < 1000) == 40
        idle = requests(ADVERSARIAL["idle-resume"](2))
        assert max(b.at - a.at for a, b in itertools.pairwise(idle)) >= 36000
        cuts = ADVERSARIAL["budget-cuts"](2)
        assert [r.budget for r in cuts.restarts] == [4 * GiB, 2 * GiB]
        assert ADVERSARIAL["slow-pace"](2).engine.prefill_tps == 300.0
        fast = requests(ADVERSARIAL["fast-pace"](2))
        assert fast[-1].at - fast[0].at < 1.0

    def test_chat_traffic_grows_saves_to_most_of_the_budget(self) -> None:
        """testing.traffic's shape: six conversations on a 600-token prompt,
        a question on one 34,000-token document on about one request in
        seven, conversations past 60k tokens by the end of 300 requests."""
        w = ADVERSARIAL["chat-traffic"](2)
        reqs = requests(w)
        assert len(reqs) == 300 and w.engine.budget == 1600 * MiB
        convs = {r.session for r in reqs if r.session.startswith("c")}
        questions = [r for r in reqs if r.session.startswith("q")]
        assert len(convs) == 6 and 25 <= len(questions) <= 60
        assert {r.tokens for r in questions} == {34_200} and {r.anchor for r in reqs} == {600}
        assert max(r.tokens for r in reqs) > 60_000


class TestSweep:
    def test_seed_ranges(self) -> None:
        assert parse_seeds("1-3,7,2") == (1, 2, 3, 7)
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds("a-b")

    def test_many_seeds_per_budget(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`simulate interleaved --seeds --budget --budget` prints, per engine
        budget, mean and worst share served and gap closed."""
        argv = ["interleaved", "--seeds", "1-3", "--budget", "4GiB", "--budget", "16GiB",
                "--per-seed"]  # fmt: skip
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert "engine budget 4.00 GiB, 3 seeds (1-3)" in out
        assert "engine budget 16.00 GiB, 3 seeds (1-3)" in out
        for label in ("engine alone", "unbounded", "default"):
            assert out.count(f"\n{label} ") >= 2
        assert "gap closed mean" in out and "below alone" in out

    def test_json_sweep(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--json gives every seed's share and gap, and the mean and worst."""
        assert cli.main(["interleaved", "--seeds", "1,2", "--json"]) == 0
        (sweep,) = json.loads(capsys.readouterr().out)
        runs = sweep["runs"]
        assert set(runs) == {"engine alone", "unbounded", "default"}
        assert len(runs["default"]["share"]) == 2
        assert runs["default"]["share_worst"] == min(runs["default"]["share"])
        assert sweep["budget"] == 4 * GiB

    def test_file_needs_a_generator(self, tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
        """--seeds on a hand-written workload is an error naming why."""
        assert cli.main(["scenarios/nested-ladder.yaml", "--seeds", "1-2"]) == 2
        assert "generated workload" in capsys.readouterr().err

    def test_load_source(self) -> None:
        """A generator name with seed, pace and budget."""
        w = load_source("interleaved", 4, "3000", 16 * GiB)
        assert (w.engine.budget, w.engine.prefill_tps) == (16 * GiB, 3000.0)
        assert set(PACES) == {"instant", "3000"}
