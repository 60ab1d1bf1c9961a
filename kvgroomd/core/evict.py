"""Budget eviction: which snapshots to remove to get under the budget.

Pure, and policy-blind: a scorer (scoring.py) values every snapshot, and this
module removes the lowest-valued first (older last use breaks ties, as in the
engine) until usage is at the low watermark. Some files are never candidates:
agent and unknown-reason entries (other tools' state) and snapshots younger
than `protect_new`, which need time to earn their first hit. Invalid and
unknown-format files are not in the index at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kvgroomd.core.decision import Cause, Decision
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

    @property
    def target(self) -> int:
        """Usage to get down to once over the limit."""
        return int(self.limit * self.low_watermark)


_NEVER = np.zeros(256, dtype=bool)  # reason code -> never evicted
_NEVER[[int(r) for r in NEVER_EVICTED]] = True


def protected(cols: Columns, clock: Clock, protect_new: float) -> npt.NDArray[np.bool_]:
    """Rows that budget eviction must never choose. Age counts from the
    header's created_at, or from when kvgroomd first saw the file if that is
    earlier (a header time from a clock running ahead)."""
    seen = np.where(cols["seen_at"] > 0, cols["seen_at"], cols["created_at"])
    born = np.minimum(cols["created_at"], seen).astype(np.float64)
    young = (clock.now - born) < protect_new
    mask: npt.NDArray[np.bool_] = _NEVER[cols["reason"]] | young
    return mask


def ranking(cols: Columns, clock: Clock, policy: Policy, params: Mapping[str, float] | None,
            protect_new: float) -> tuple[npt.NDArray[np.intp], Values]:  # fmt: skip
    """Row numbers in eviction order (first = first to go) and their values;
    protected rows come last with value +inf."""
    values = policy.score(cols, clock, params)
    values = np.where(protected(cols, clock, protect_new), np.inf, values)
    last = np.where(cols["last_used"] > 0, cols["last_used"], cols["created_at"])
    return np.lexsort((last, values)), values


def choose(index: Index, budget: Budget, clock: Clock, policy: Policy,
           params: Mapping[str, float] | None = None) -> list[Decision]:  # fmt: skip
    """The lowest-valued unprotected snapshots whose removal brings usage to
    the target, or every unprotected one when even that is not enough."""
    cols = index.columns()
    total = index.total_bytes
    if total <= budget.limit:
        return []
    values = policy.score(cols, clock, params)
    values = np.where(protected(cols, clock, budget.protect_new), np.inf, values)
    victims = _cheapest(cols, values, total - budget.target)
    return decide_rows(index, victims, Cause.BUDGET, clock.now, policy=policy.name,
                       score=values[victims])  # fmt: skip


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
        order = pool[np.lexsort((last[pool], values[pool]))]  # stable, as over all rows
        freed = np.cumsum(cols["size"][order])
        if freed[-1] >= needed or len(pool) == len(finite):
            victims: npt.NDArray[np.intp] = order[: min(int(np.searchsorted(freed, needed)) + 1,
                                                        len(order))]  # fmt: skip
            return victims
        k *= 4
