"""Budget eviction: which snapshots to remove to get under the budget.

Pure, and policy-blind: a scorer (scoring.py) values every snapshot, and this
module removes the lowest-valued first (ties: the file idle longest on the
cache's clock, then on the wall clock) until usage is at the low watermark.
Agent and unknown-reason entries (other tools' state) are never candidates.
Snapshots younger than `protect_new` (0 by default) count twice their value:
they yield to older files worth up to twice as much, never to more, so
protection never turns eviction into arrival order nor takes a high-value
file because it is the only one old enough. Invalid and unknown-format files
are not in the index at all.

Of the files chosen, those the engine's own eviction would take first anyway
may stay (`plan`, `Budget.ceiling`; core/deferral.py says why).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kvgroomd.core.decision import Cause, Decision
from kvgroomd.core.deferral import engine_first
from kvgroomd.core.index import Columns, Index, decide_rows
from kvgroomd.core.scoring import Clock, Policy, Values
from kvgroomd.format.header import Reason

NEVER_EVICTED = (Reason.UNKNOWN, Reason.AGENT_SYSTEM, Reason.AGENT_SESSION)


@dataclass(frozen=True, slots=True)
class Budget:
    """Evict when usage exceeds `limit`, down to `limit * low_watermark`."""

    limit: int
    low_watermark: float = 0.9
    protect_new: float = 120.0
    # Usage that chosen files left for the engine to evict when it next stores
    # (`engine_first`) may keep the directory at: the engine's budget (or a
    # lower cap). None: nothing is left (the engine's budget is not the limit).
    ceiling: int | None = None

    @property
    def target(self) -> int:
        """Usage to get down to once over the limit."""
        return int(self.limit * self.low_watermark)


_NEVER = np.zeros(256, dtype=bool)  # reason code -> never evicted
_NEVER[[int(r) for r in NEVER_EVICTED]] = True


# A file younger than protect_new yields to older files worth up to this many
# times as much, never to more: protection breaks near-ties for fresh files;
# it never makes eviction take a high-value file because it is the only one
# old enough, nor turns eviction into arrival order.
YOUNG_FACTOR = 2.0


def young(cols: Columns, clock: Clock, protect_new: float) -> npt.NDArray[np.bool_]:
    """Rows younger than `protect_new` seconds. Age counts from the header's
    created_at, or from when kvgroomd first saw the file if that is earlier
    (a header time from a clock running ahead)."""
    seen = np.where(cols["seen_at"] > 0, cols["seen_at"], cols["created_at"])
    born = np.minimum(cols["created_at"], seen).astype(np.float64)
    mask: npt.NDArray[np.bool_] = (clock.now - born) < protect_new
    return mask


def protected(cols: Columns, clock: Clock, protect_new: float) -> npt.NDArray[np.bool_]:
    """Rows that budget eviction never chooses: agent and unknown reasons."""
    mask: npt.NDArray[np.bool_] = _NEVER[cols["reason"]]
    return mask


def values_of(cols: Columns, clock: Clock, policy: Policy, params: Mapping[str, float] | None,
              protect_new: float) -> Values:  # fmt: skip
    """Each row's value for eviction: the policy's, young files' raised by
    YOUNG_FACTOR, +inf for rows never chosen."""
    values = policy.score(cols, clock, params)
    values = np.where(young(cols, clock, protect_new), values * YOUNG_FACTOR, values)
    return np.where(protected(cols, clock, protect_new), np.inf, values)


def ranking(cols: Columns, clock: Clock, policy: Policy, params: Mapping[str, float] | None,
            protect_new: float) -> tuple[npt.NDArray[np.intp], Values]:  # fmt: skip
    """Row numbers in eviction order (first = first to go) and their values;
    rows never chosen come last with value +inf. Ties go to the file idle
    longest on the cache's clock, then on the wall clock."""
    values = values_of(cols, clock, policy, params, protect_new)
    last = np.where(cols["last_used"] > 0, cols["last_used"], cols["created_at"])
    return np.lexsort((last, cols["act"], values)), values


@dataclass(frozen=True, slots=True)
class Choice:
    """What a budget pass decided: unlink `decisions` now, in order; `left`
    were chosen too but stay for the engine to evict."""

    decisions: list[Decision]
    left: tuple[str, ...] = ()
    # Files larger than the limit, left to the engine (not room in waiting).
    unmanaged: tuple[str, ...] = ()
    unmanaged_bytes: int = 0


def choose(index: Index, budget: Budget, clock: Clock, policy: Policy,
           params: Mapping[str, float] | None = None) -> list[Decision]:  # fmt: skip
    """The lowest-valued unprotected snapshots whose removal brings usage to
    the target, or every unprotected one when even that is not enough (less
    those `plan` leaves to the engine)."""
    return plan(index, budget, clock, policy, params).decisions


def plan(index: Index, budget: Budget, clock: Clock, policy: Policy,
         params: Mapping[str, float] | None = None) -> Choice:  # fmt: skip
    """`choose`, and which of the chosen files stay for the engine."""
    cols = index.columns()
    # Files larger than the limit cannot be kept under it at all: unlinking
    # one now only throws away the hits it may serve before the engine needs
    # the room. When the engine's budget is what binds (a ceiling), they are
    # left to the engine's own eviction and the rest is kept under the limit,
    # as long as everything fits under the ceiling (a `budget:` cap above
    # the engine's limit is never exceeded).
    beyond = (np.zeros(len(cols), dtype=bool)
              if budget.ceiling is None or index.total_bytes > budget.ceiling
              else cols["size"] > budget.limit)  # fmt: skip
    big = int(cols["size"][beyond].sum())
    unmanaged = tuple(index.names_at(np.flatnonzero(beyond)))
    total = index.total_bytes - big
    if total <= budget.limit:
        return Choice([], unmanaged=unmanaged, unmanaged_bytes=big)
    values = values_of(cols, clock, policy, params, budget.protect_new)
    values[beyond] = np.inf
    victims = _cheapest(cols, values, total - budget.target)
    # What may stay keeps usage within the ceiling once the rest is unlinked.
    kept = index.total_bytes - int(cols["size"][victims].sum())
    left = engine_first(cols, victims, clock,
                        0 if budget.ceiling is None else budget.ceiling - kept)  # fmt: skip
    go = victims[~np.isin(victims, left)]
    decisions = decide_rows(index, go, Cause.BUDGET, clock.now, policy=policy.name,
                            score=values[go])  # fmt: skip
    return Choice(decisions, tuple(index.names_at(left)), unmanaged, big)


def _cheapest(cols: Columns, values: Values, needed: int) -> npt.NDArray[np.intp]:
    """The first rows of `ranking`'s order (finite values only) whose sizes
    add up to `needed`, or all of them. A pass usually needs few rows of many,
    so the order is only computed for the k lowest values (and every row tied
    with the k-th): O(n) per try instead of sorting everything."""
    finite = np.flatnonzero(np.isfinite(values))
    if not len(finite):
        return finite
    fvalues = values[finite]
    last = np.where(cols["last_used"] > 0, cols["last_used"], cols["created_at"])
    k = 64
    while True:
        if k < len(finite):
            threshold = fvalues[np.argpartition(fvalues, k - 1)[k - 1]]
            pool = finite[fvalues <= threshold]  # ties at the threshold too: exact order
        else:
            pool = finite
        order = pool[np.lexsort((last[pool], cols["act"][pool], values[pool]))]  # as ranking
        freed = np.cumsum(cols["size"][order])
        if freed[-1] >= needed or len(pool) == len(finite):
            victims: npt.NDArray[np.intp] = order[: min(int(np.searchsorted(freed, needed)) + 1,
                                                        len(order))]  # fmt: skip
            return victims
        k *= 4
