"""The usage limit budget eviction keeps below, and when a budget pass runs.

Pure. The limit is the configured cap (`budget:`) and the engine's budget
less the room its next store needs (headroom.py), whichever is lower; files
a pass chose and left for the engine to evict first count as room
(deferral.py), up to a ceiling: the engine's budget, or the cap below it.
A pass chooses by policy (evict.py) only when usage is over the limit and
not merely by files the engine will still take first. When usage stays
over the limit after every choice, one note says why, once per episode.
"""

from __future__ import annotations

from kvgroomd import events
from kvgroomd.core.deferral import Deferred
from kvgroomd.core.evict import Budget, Choice, plan
from kvgroomd.core.headroom import Headroom
from kvgroomd.core.index import Index
from kvgroomd.core.scoring import POLICIES, Clock
from kvgroomd.core.steps import Note, Rules


class Limits:
    """The room kept, the files left to the engine, and the unreachable note."""

    def __init__(self, consume_tokens: int) -> None:
        self.headroom = Headroom(consume_tokens=consume_tokens)
        # Files the last pass chose but left for the engine's own eviction.
        self.deferred = Deferred()
        self.failed = 0  # unlinks that failed since the budget was last reached
        self._unreachable: str | None = None  # why usage stays over the limit, once noted

    def reconfigure(self, rules: Rules) -> None:
        """New rules (a reload): judged afresh."""
        self.headroom.consume_tokens = rules.cold_max_tokens
        self.deferred.leave(())
        self._unreachable = None

    def limit(self, index: Index, rules: Rules) -> int | None:
        """The usage budget eviction keeps below: the configured cap, and the
        engine's budget less the room its next store needs, where files the
        engine would evict first and kvgroomd chose anyway count as room."""
        base = self.base(rules)
        left = 0 if base is None else self.deferred.size(index)
        ceiling = None if not left or base is None else self.ceiling(rules, base)
        return base if base is None or ceiling is None else min(base + left, ceiling)

    def base(self, rules: Rules) -> int | None:
        """The limit before any file is left to the engine."""
        caps = [] if rules.budget is None else [rules.budget]
        if rules.engine_budget is not None:
            caps.append(max(rules.engine_budget - self.headroom.need(), 0))
        return min(caps) if caps else None

    @staticmethod
    def ceiling(rules: Rules, limit: int) -> int | None:
        """Usage that chosen files left for the engine may keep (evict.plan):
        its budget, or the cap below it; None when the cap is what binds."""
        engine, cap = rules.engine_budget, rules.budget
        if engine is None or (cap is not None and cap <= limit):
            return None
        return engine if cap is None else min(cap, engine)

    def choose(self, index: Index, rules: Rules, clock: Clock) -> Choice | None:
        """A budget pass, or None when usage needs none."""
        limit = self.base(rules)
        if limit is None or index.total_bytes <= limit:
            self.deferred.leave(())
            self._unreachable = None
            self.failed = 0
            return None
        if index.total_bytes <= (self.limit(index, rules) or 0) and self.deferred.still_first(
                index, clock):  # fmt: skip
            return None  # over only by files the engine will evict first
        budget = Budget(limit, rules.low_watermark, rules.protect_new,
                        self.ceiling(rules, limit))  # fmt: skip
        choice = plan(index, budget, clock, POLICIES[rules.policy], rules.policy_params)
        self.deferred.leave(choice.left, choice.unmanaged)
        return choice

    def unreachable(self, index: Index, rules: Rules, over_by: int = 0) -> list[Note]:
        """Usage stays over the limit (plus `over_by`: files too large to keep
        under it, left to the engine) after every choice: say why, once per
        episode (every event runs the budget while, say, a burst of young
        files holds usage up: one line says so, not one per event)."""
        limit = self.limit(index, rules)
        if limit is None or index.total_bytes <= limit + over_by:
            return []
        why = ("unlinks failed (see snapshot.unlink_failed)" if self.failed
               else "the rest is protected (agent or unknown reason)")  # fmt: skip
        if why == self._unreachable:
            return []
        self._unreachable = why
        return [Note(events.BUDGET_UNREACHABLE, "warning", {
            "dir_bytes": index.total_bytes, "budget": limit + over_by, "why": why})]  # fmt: skip
