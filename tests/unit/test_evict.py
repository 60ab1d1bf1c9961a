"""Budget eviction: lowest value first, down to the low watermark, never the protected."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from kvgroomd.core.decision import Cause, Decision
from kvgroomd.core.evict import NEVER_EVICTED, Budget, choose, plan, protected, ranking, young
from kvgroomd.core.index import Index, Snapshot, decide
from kvgroomd.core.scoring import POLICIES, Clock, Policy
from kvgroomd.format.header import Reason
from tests.unit.builders import DAY, HOUR, T0, index_of, snapshot

NOW = T0
OLD = NOW - 10 * DAY  # created long ago: not protected as young
DS4 = POLICIES["ds4"]
PREFILL = POLICIES["prefill"]
CHAIN = [Reason.COLD, Reason.CONTINUED, Reason.EVICT, Reason.SHUTDOWN]
BOTH = [pytest.param(DS4, id="ds4"), pytest.param(PREFILL, id="prefill")]


def engine_score(s: Snapshot, now: float) -> float:
    """Spec §3 by hand: (h + 1) * tokens / size, h = hits * 2^(-idle / 6 h),
    0 below 0.01, last_used falling back to created_at; x2 for cold/evict/shutdown."""
    h = s.header
    last = h.last_used or h.created_at
    decayed = h.hits * 2 ** (-(now - last) / (6 * HOUR))
    if decayed < 0.01:
        decayed = 0.0
    score = (decayed + 1) * h.tokens / s.size
    if h.reason in (Reason.COLD, Reason.EVICT, Reason.SHUTDOWN):
        score *= 2
    return score


def names(decisions: list[Decision]) -> list[str]:
    return [d.name for d in decisions]


def everything(index: Index) -> Budget:
    """A budget no set of removals can reach: choose() returns every candidate."""
    assert index.total_bytes > 1
    return Budget(limit=1, low_watermark=0.5)


class TestBudget:
    def test_target_is_limit_times_low_watermark(self) -> None:
        """The eviction target is limit * low_watermark, rounded down."""
        assert Budget(1000, 0.9).target == 900
        assert Budget(1001, 0.5).target == 500
        assert Budget(4096 * 2**20).target == int(4096 * 2**20 * 0.9)

    def test_defaults(self) -> None:
        """Defaults: low watermark 0.9, new files protected for 120 s."""
        b = Budget(10)
        assert (b.low_watermark, b.protect_new) == (0.9, 120.0)


class TestUnderBudget:
    @pytest.mark.parametrize("policy", BOTH)
    def test_nothing_when_under_budget(self, policy: Policy) -> None:
        """Usage below the limit evicts nothing."""
        index = index_of(snapshot(size=400, created_at=OLD), snapshot(size=500, created_at=OLD))
        assert choose(index, Budget(1000), Clock(NOW), policy) == []

    @pytest.mark.parametrize("policy", BOTH)
    def test_nothing_when_exactly_at_budget(self, policy: Policy) -> None:
        """Usage equal to the limit is not over it."""
        index = index_of(snapshot(size=400, created_at=OLD), snapshot(size=600, created_at=OLD))
        assert choose(index, Budget(1000), Clock(NOW), policy) == []

    def test_empty_index(self) -> None:
        """An empty index evicts nothing, even with a zero budget."""
        assert choose(Index(), Budget(0), Clock(NOW), DS4) == []


class TestWatermark:
    @pytest.mark.parametrize("policy", BOTH)
    @pytest.mark.parametrize("seed", [1, 2, 3, 4])
    def test_reaches_the_low_watermark_and_no_further(self, policy: Policy, seed: int) -> None:
        """Removing the victims brings usage to at most limit * low_watermark, and
        the last victim was needed to get there."""
        rng = random.Random(seed)
        snaps = [
            snapshot(size=rng.randrange(10_000, 500_000), tokens=rng.randrange(100, 30_000),
                     hits=rng.randrange(5), created_at=OLD, last_used=NOW - rng.randrange(DAY),
                     reason=rng.choice([Reason.COLD, Reason.CONTINUED, Reason.EVICT]))
            for _ in range(40)
        ]  # fmt: skip
        index = index_of(*snaps)
        total = index.total_bytes
        budget = Budget(limit=total * 2 // 3, low_watermark=0.8)
        victims = choose(index, budget, Clock(NOW), policy)
        freed = [d.fields["size"] for d in victims]
        assert total - sum(freed) <= budget.target
        assert total - sum(freed[:-1]) > budget.target
        assert len(set(names(victims))) == len(victims)

    def test_one_big_victim_can_be_enough(self) -> None:
        """A single low-valued file that frees enough is the only victim."""
        big = snapshot(size=900, tokens=1, created_at=OLD)
        small = [snapshot(size=100, tokens=1000, created_at=OLD) for _ in range(3)]
        index = index_of(big, *small)  # 1200 bytes
        assert names(choose(index, Budget(1000, 0.5), Clock(NOW), DS4)) == [big.name]


class TestOrderDs4:
    def rows(self) -> dict[str, Snapshot]:
        return {
            "A": snapshot(reason=Reason.CONTINUED, tokens=1000, size=100_000, created_at=OLD),
            "B": snapshot(reason=Reason.COLD, tokens=1000, size=100_000, created_at=OLD,
                          last_used=NOW - DAY),
            "C": snapshot(reason=Reason.CONTINUED, tokens=1000, size=50_000, hits=3,
                          created_at=OLD, last_used=NOW - 6 * HOUR),
            "D": snapshot(reason=Reason.EVICT, tokens=5000, size=400_000, hits=1,
                          created_at=OLD, last_used=NOW - 12 * HOUR),
            "E": snapshot(reason=Reason.CONTINUED, tokens=2000, size=100_000, hits=1,
                          created_at=OLD, last_used=NOW - 2 * DAY),
            "F": snapshot(reason=Reason.SHUTDOWN, tokens=3000, size=200_000,
                          created_at=NOW - 3 * HOUR, last_used=0),
            "G": snapshot(reason=Reason.CONTINUED, tokens=4000, size=100_000, created_at=OLD),
        }  # fmt: skip

    def test_hand_computed_scores(self) -> None:
        """The hand-computed engine scores are the ones this case is built on."""
        rows = self.rows()
        got = {k: engine_score(s, NOW) for k, s in rows.items()}
        expected = {"A": 0.01, "B": 0.02, "C": 0.05, "D": 0.03125, "E": 0.02, "F": 0.03, "G": 0.04}
        assert got == pytest.approx(expected)

    def test_victims_in_engine_score_order(self) -> None:
        """Under "ds4" victims go by the engine's score, lowest first; the
        tie between B and E goes to E's older last use."""
        rows = self.rows()
        index = index_of(*rows.values())
        got = choose(index, everything(index), Clock(NOW), DS4)
        key = {s.name: k for k, s in rows.items()}
        assert [key[n] for n in names(got)] == ["A", "E", "B", "F", "D", "G", "C"]
        for d in got:
            assert d.fields["score"] == pytest.approx(engine_score(index.get(d.name), NOW))  # type: ignore[arg-type]

    def test_stops_once_enough_is_freed(self) -> None:
        """With room for all but 150 kB the two lowest-scored go (A then E)."""
        rows = self.rows()
        index = index_of(*rows.values())  # 1_050_000 bytes
        budget = Budget(limit=1_000_000, low_watermark=0.9)  # must free 150_000
        assert names(choose(index, budget, Clock(NOW), DS4)) == [rows["A"].name, rows["E"].name]

    def test_hits_fading_below_001_count_as_none(self) -> None:
        """A hit 48 h old (2^-8 < 0.01) is worth nothing to the engine's score."""
        faded = snapshot(tokens=1000, size=1000, hits=1, created_at=OLD, last_used=NOW - 2 * DAY)
        fresh = snapshot(tokens=1000, size=1000, hits=1, created_at=OLD, last_used=NOW - 7 * HOUR)
        values = DS4.score(index_of(faded, fresh).columns(), Clock(NOW))
        assert values.tolist() == pytest.approx([1.0, 1 + 2 ** (-7 / 6)])


class TestOrderPrefill:
    def test_victims_in_prefill_value_order(self) -> None:
        """Under "prefill" victims go in ascending order of the policy's value."""
        rng = random.Random(7)
        snaps = [
            snapshot(size=rng.randrange(10_000, 900_000), tokens=rng.randrange(600, 60_000),
                     hits=rng.randrange(20), created_at=OLD - rng.randrange(30 * DAY),
                     last_used=NOW - rng.randrange(20 * DAY), abi=rng.choice([0, 2]),
                     covered=rng.random() < 0.3,
                     reason=rng.choice(CHAIN))
            for _ in range(30)
        ]  # fmt: skip
        index = index_of(*snaps)
        got = choose(index, everything(index), Clock(NOW), PREFILL)
        values = PREFILL.score(index.columns(), Clock(NOW))
        by_name = dict(zip(index.names, values.tolist(), strict=True))
        scores = [by_name[n] for n in names(got)]
        assert len(got) == 30
        assert scores == sorted(scores)
        assert [d.fields["score"] for d in got] == pytest.approx(scores)

    def test_reused_cold_anchor_outlives_a_one_shot_evict(self) -> None:
        """A small, often-hit cold anchor is kept over a big never-hit evict save."""
        anchor = snapshot(reason=Reason.COLD, tokens=533, size=30 * 2**20, hits=16,
                          created_at=OLD, last_used=NOW - DAY)  # fmt: skip
        chat = snapshot(reason=Reason.EVICT, tokens=80_000, size=1200 * 2**20, hits=1,
                        created_at=OLD, last_used=NOW - DAY)  # fmt: skip
        index = index_of(anchor, chat)
        got = choose(index, Budget(limit=1000 * 2**20), Clock(NOW), PREFILL)
        assert names(got) == [chat.name]

    def test_params_override_defaults(self) -> None:
        """Policy parameters passed to choose() change the ranking."""
        # The discount for being covered applies to evict/shutdown saves.
        covered = snapshot(tokens=1000, size=1000, created_at=OLD, last_used=NOW, covered=True,
                           reason=Reason.EVICT)  # fmt: skip
        plain = snapshot(tokens=900, size=1000, created_at=OLD, last_used=NOW, reason=Reason.EVICT)
        index = index_of(covered, plain)
        budget = Budget(limit=1500, low_watermark=0.9)
        assert names(choose(index, budget, Clock(NOW), PREFILL)) == [covered.name]
        got = choose(index, budget, Clock(NOW), PREFILL, {"covered_factor": 1.0})
        assert names(got) == [plain.name]


class TestTies:
    @pytest.mark.parametrize("policy", BOTH)
    def test_equal_scores_go_older_last_use_first(self, policy: Policy) -> None:
        """Among equal values, the file used longer ago goes first."""
        params = {"idle_half_life": 1e30} if policy is PREFILL else None
        newer = snapshot(tokens=1000, size=1000, created_at=OLD, last_used=NOW - HOUR)
        older = snapshot(tokens=1000, size=1000, created_at=OLD, last_used=NOW - 5 * HOUR)
        oldest = snapshot(tokens=1000, size=1000, created_at=OLD - DAY, last_used=0)
        index = index_of(newer, oldest, older)
        values = policy.score(index.columns(), Clock(NOW), params)
        assert len(set(values.tolist())) == 1
        got = choose(index, everything(index), Clock(NOW), policy, params)
        assert names(got) == [oldest.name, older.name, newer.name]


class TestProtected:
    @pytest.mark.parametrize("policy", BOTH)
    @pytest.mark.parametrize("reason", list(NEVER_EVICTED))
    def test_agent_and_unknown_reasons_are_never_chosen(
        self, policy: Policy, reason: Reason
    ) -> None:
        """agent-system, agent-session and unknown entries are never victims,
        however low their value."""
        other = snapshot(reason=reason, tokens=1, size=10_000, created_at=OLD)
        mine = snapshot(tokens=5000, size=1000, hits=9, created_at=OLD)
        index = index_of(other, mine)
        assert names(choose(index, everything(index), Clock(NOW), policy)) == [mine.name]

    @pytest.mark.parametrize("policy", BOTH)
    def test_young_files_count_twice_their_value(self, policy: Policy) -> None:
        """A file younger than protect_new yields to an older one worth up to
        twice as much (it counts twice); one exactly that old counts once."""
        young_ = snapshot(tokens=10, size=10_000, created_at=NOW - 119)
        cheaper = snapshot(tokens=15, size=10_000, created_at=NOW - 3600)
        index = index_of(young_, cheaper)
        got = choose(index, Budget(limit=10_001, low_watermark=1.0, protect_new=120), Clock(NOW), policy)
        assert names(got) == [cheaper.name]
        of_age = snapshot(tokens=10, size=10_000, created_at=NOW - 120)
        index = index_of(of_age, cheaper)
        got = choose(index, Budget(limit=10_001, low_watermark=1.0, protect_new=120), Clock(NOW), policy)
        assert names(got) == [of_age.name]

    @pytest.mark.parametrize("policy", BOTH)
    def test_protection_never_takes_a_much_better_old_file(self, policy: Policy) -> None:
        """The issue's failure: only one file old enough, and it is the most
        valuable one. A young file of a tenth of its value goes instead."""
        anchor = snapshot(reason=Reason.COLD, tokens=5000, size=100_000, hits=15,
                          created_at=NOW - 3600)  # fmt: skip
        fresh = snapshot(tokens=500, size=100_000, created_at=NOW - 1)
        index = index_of(anchor, fresh)
        got = choose(index, Budget(limit=100_001, low_watermark=1.0, protect_new=120), Clock(NOW), policy)
        assert names(got) == [fresh.name]

    def test_protection_is_not_arrival_order(self) -> None:
        """With every file young, eviction is still by value, not by age."""
        files = [snapshot(tokens=t, size=10_000, created_at=NOW - age)
                 for t, age in ((900, 60), (100, 5), (500, 30))]  # fmt: skip
        index = index_of(*files)
        got = choose(index, Budget(limit=10_001, low_watermark=1.0, protect_new=120),
                     Clock(NOW), DS4)  # fmt: skip
        assert names(got) == [files[1].name, files[2].name]

    @pytest.mark.parametrize("policy", BOTH)
    def test_only_never_evicted_left_returns_all_others(self, policy: Policy) -> None:
        """When the candidates cannot free enough, all of them go (young ones
        too) and no agent or unknown entry does."""
        big = [
            snapshot(reason=Reason.AGENT_SESSION, size=10**6, created_at=OLD),
            snapshot(reason=Reason.AGENT_SYSTEM, size=10**6, created_at=OLD),
            snapshot(reason=Reason.UNKNOWN, reason_code=42, size=10**6, created_at=OLD),
        ]
        small = [snapshot(size=1000 + i, hits=i, created_at=OLD) for i in range(3)]
        fresh = snapshot(size=10**6, created_at=NOW - 10)
        index = index_of(*big, *small, fresh)
        got = choose(index, Budget(limit=2 * 10**6, protect_new=120), Clock(NOW), policy)
        assert sorted(names(got)) == sorted(s.name for s in (*small, fresh))

    def test_nothing_but_never_evicted_gives_nothing(self) -> None:
        """Over budget with only agent and unknown entries, there is nothing to choose."""
        index = index_of(snapshot(reason=Reason.AGENT_SESSION, size=10**6, created_at=OLD),
                         snapshot(reason=Reason.UNKNOWN, size=10**6, created_at=NOW))  # fmt: skip
        assert choose(index, Budget(limit=10), Clock(NOW), PREFILL) == []

    def test_protected_mask_and_ranking(self) -> None:
        """protected() flags never-evicted reasons, young() young files;
        ranking puts the never-evicted last with value +inf and young files
        at twice their value."""
        rows = [
            snapshot(created_at=OLD), snapshot(reason=Reason.AGENT_SYSTEM, created_at=OLD),
            snapshot(created_at=NOW - 5), snapshot(reason=Reason.COLD, created_at=OLD),
        ]  # fmt: skip
        cols = index_of(*rows).columns()
        assert protected(cols, Clock(NOW), 120).tolist() == [False, True, False, False]
        assert young(cols, Clock(NOW), 120).tolist() == [False, False, True, False]
        order, values = ranking(cols, Clock(NOW), DS4, None, 120)
        assert order[-1] == 1 and np.isinf(values[1])
        plain = DS4.score(cols, Clock(NOW))
        assert values[2] == pytest.approx(2 * plain[2])
        assert values[[0, 3]].tolist() == pytest.approx(plain[[0, 3]].tolist())


class TestDecisionFields:
    @pytest.mark.parametrize("policy", BOTH)
    def test_fields(self, policy: Policy) -> None:
        """A budget decision names the file, its identity, and policy, score,
        reason label, tokens, hits, size and age."""
        s = snapshot(name="AB" * 20 + ".kv", reason=Reason.EVICT, tokens=4321, hits=2,
                     size=77_777, created_at=NOW - 3 * DAY, last_used=NOW - HOUR)  # fmt: skip
        index = index_of(s)
        now = NOW + 0.4  # ages are rounded to whole seconds
        (d,) = choose(index, Budget(limit=1), Clock(now), policy)
        assert d.name == s.name
        assert d.cause is Cause.BUDGET
        assert d.seen == s.seen
        expected_score = float(policy.score(index.columns(), Clock(now))[0])
        assert d.fields == {
            "sha": "ab" * 20, "reason": "evict", "tokens": 4321, "hits": 2, "size": 77_777,
            "age_s": 3 * DAY, "policy": policy.name, "score": expected_score,
        }  # fmt: skip
        if policy is DS4:
            assert d.fields["score"] == pytest.approx(engine_score(s, now))
        assert math.isfinite(d.fields["score"])
        assert type(d.fields["score"]) is float


class TestChooseAgreesWithTheFullRanking:
    """choose() orders only the few lowest values it needs (argpartition, ties
    included) and builds decisions from rows: it must give exactly the
    decisions of the plain algorithm (full ranking, cumulative sizes,
    decide() per row)."""

    @staticmethod
    def plain(index: Index, budget: Budget, policy: Policy) -> list[Decision]:
        cols = index.columns()
        total = int(cols["size"].sum())
        if total <= budget.limit:
            return []
        order, values = ranking(cols, Clock(NOW), policy, None, budget.protect_new)
        order = order[np.isfinite(values[order])]
        freed = np.cumsum(cols["size"][order])
        n = min(int(np.searchsorted(freed, total - budget.target)) + 1, len(order))
        return [decide(index.at(int(i)), Cause.BUDGET, NOW, policy=policy.name,
                       score=float(values[i])) for i in order[:n]]  # fmt: skip

    @pytest.mark.parametrize("policy", BOTH)
    @pytest.mark.parametrize("seed", range(5))
    @pytest.mark.parametrize("watermark", [1.0, 0.99, 0.9, 0.5, 0.01])
    def test_same_decisions(self, policy: Policy, seed: int, watermark: float) -> None:
        rng = random.Random(seed)
        snaps = [
            snapshot(reason=rng.choice(list(Reason)), tokens=rng.choice([1000, 2000, 30000]),
                     hits=rng.choice([0, 0, 1, 5]), size=rng.choice([10**6, 2 * 10**6, 10**7]),
                     created_at=NOW - rng.choice([60, DAY, 5 * DAY]),
                     last_used=NOW - rng.choice([0, 60, DAY]))  # many exact ties
            for _ in range(700)
        ]  # fmt: skip
        index = index_of(*snaps)
        budget = Budget(index.total_bytes - rng.choice([1, 10**7]), watermark)
        got, want = choose(index, budget, Clock(NOW), policy), self.plain(index, budget, policy)
        assert [(d.name, d.seen, d.fields, d.header) for d in got] == [
            (d.name, d.seen, d.fields, d.header) for d in want]


class TestLeftToTheEngine:
    """With a ceiling (the engine's budget binds), chosen files the engine's own
    eviction takes before anything kvgroomd keeps stay for the engine."""

    def files(self) -> dict[str, Snapshot]:
        # Engine scores (x2 for evict saves): rung 0.04, dead 0.2, save 1.0.
        # Prefill values: the dead save (covered by a longer one) 0.01, the
        # rung 0.02, the save 0.5.
        return {
            "rung": snapshot(reason=Reason.CONTINUED, tokens=4000, size=100_000, created_at=OLD),
            "dead": snapshot(reason=Reason.EVICT, tokens=10_000, size=100_000, created_at=OLD,
                             covered=True),
            "save": snapshot(reason=Reason.EVICT, tokens=25_000, size=100_000, created_at=OLD,
                             hits=1, last_used=NOW),
        }  # fmt: skip

    def test_the_engines_first_victims_stay(self) -> None:
        """The rung is the engine's lowest and kvgroomd's choice: it stays;
        without a ceiling it is unlinked now."""
        f = self.files()
        index = index_of(*f.values())
        plain = plan(index, Budget(250_000, 0.8, 0), Clock(NOW), DS4)
        assert names(plain.decisions) == [f["rung"].name] and plain.left == ()
        got = plan(index, Budget(250_000, 0.8, 0, ceiling=300_000), Clock(NOW), DS4)
        assert got.decisions == [] and got.left == (f["rung"].name,)

    def test_a_victim_the_engine_ranks_above_a_kept_file_goes_now(self) -> None:
        """kvgroomd takes the dead save and keeps the rung: the engine would
        take the rung first, so the dead save is unlinked now, not left."""
        f = self.files()
        index = index_of(*f.values())
        values = PREFILL.score(index.columns(), Clock(NOW))
        assert values[1] < values[0] < values[2]  # dead, then rung, then save
        got = plan(index, Budget(250_000, 0.8, 0, ceiling=300_000), Clock(NOW), PREFILL)
        assert names(got.decisions) == [f["dead"].name] and got.left == ()

    def test_what_stays_keeps_usage_within_the_ceiling(self) -> None:
        """Left files never lift usage over the ceiling: with room for none
        beside what kvgroomd keeps, everything chosen goes now."""
        f = self.files()
        index = index_of(*f.values())
        got = plan(index, Budget(120_000, 1.0, 0, ceiling=150_000), Clock(NOW), DS4)
        assert names(got.decisions) == [f["rung"].name, f["dead"].name] and got.left == ()
        one = plan(index, Budget(120_000, 1.0, 0, ceiling=200_000), Clock(NOW), DS4)
        assert one.left == (f["rung"].name,) and names(one.decisions) == [f["dead"].name]

    def test_equal_engine_scores_are_not_left(self) -> None:
        """A victim tied with a kept file on the engine's score goes now: the
        engine breaks ties by times and scan order we cannot see."""
        a = snapshot(reason=Reason.CONTINUED, tokens=1000, size=100_000, created_at=OLD)
        b = snapshot(reason=Reason.CONTINUED, tokens=1000, size=100_000, created_at=OLD)
        index = index_of(a, b)
        got = plan(index, Budget(150_000, 1.0, 0, ceiling=400_000), Clock(NOW), DS4)
        assert len(got.decisions) == 1 and got.left == ()
