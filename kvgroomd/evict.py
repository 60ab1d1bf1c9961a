"""Budget eviction: which snapshots to remove to get under the budget.

Pure, and policy-blind: a scorer (scoring.py) values every snapshot, and this
module removes the lowest-valued first (older last use breaks ties, as in the
engine) until usage is at the low watermark. Some files are never candidates:
agent and unknown-reason entries (other tools' state) and snapshots younger
than `protect_new`, which need time to earn their first hit. Invalid and
unknown-format files are not in the index at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kvgroomd.decision import Cause, Decision
from kvgroomd.index import Columns, Index, decide
from kvgroomd.scoring import Policy, Values
from kvgroomd.snapshot import Reason

NEVER_EVICTED = (Reason.UNKNOWN, Reason.AGENT_SYSTEM, Reason.AGENT_SESSION)


@dataclass(frozen=True, slots=True)
class Budget:
    """Evict when usage exceeds `limit`, down to `limit * low_watermark`."""

    limit: int
    low_watermark: float = 0.9
    protect_new: float = 120.0

    @property
    def target(self) -> int:
        """Usage to get down to once over the limit."""
        return int(self.limit * self.low_watermark)


def protected(cols: Columns, now: float, protect_new: float) -> npt.NDArray[np.bool_]:
    """Rows that budget eviction must never choose."""
    young = (now - cols["created_at"].astype(np.float64)) < protect_new
    return np.isin(cols["reason"], [int(r) for r in NEVER_EVICTED]) | young


def ranking(cols: Columns, now: float, policy: Policy, params: dict[str, float] | None,
            protect_new: float) -> tuple[npt.NDArray[np.intp], Values]:  # fmt: skip
    """Row numbers in eviction order (first = first to go) and their values;
    protected rows come last with value +inf."""
    values = policy.score(cols, now, params)
    values = np.where(protected(cols, now, protect_new), np.inf, values)
    last = np.where(cols["last_used"] > 0, cols["last_used"], cols["created_at"])
    return np.lexsort((last, values)), values


def choose(index: Index, budget: Budget, now: float, policy: Policy,
           params: dict[str, float] | None = None) -> list[Decision]:  # fmt: skip
    """The lowest-valued unprotected snapshots whose removal brings usage to
    the target, or every unprotected one when even that is not enough."""
    cols = index.columns()
    total = int(cols["size"].sum())
    if total <= budget.limit:
        return []
    order, values = ranking(cols, now, policy, params, budget.protect_new)
    order = order[np.isfinite(values[order])]
    freed = np.cumsum(cols["size"][order])
    needed = total - budget.target
    n = min(int(np.searchsorted(freed, needed)) + 1, len(order))
    return [
        decide(index.at(int(i)), Cause.BUDGET, now, policy=policy.name, score=float(values[i]))
        for i in order[:n]
    ]
