"""Eviction policies as data: named scorers over the whole index.

Pure. A scorer maps the index columns and `now` to one value per snapshot:
what keeping that file is worth per byte it holds. Higher means keep; the
evictor removes the lowest first and knows nothing else about policies. A new
policy is one function registered here plus its default parameters (which the
config's `policy:` block may override, by name).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kvgroomd.index import Columns
from kvgroomd.snapshot import Reason

Values = npt.NDArray[np.float64]
Scorer = Callable[[Columns, float, Mapping[str, float]], Values]

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class Policy:
    """A named scorer with its tunable parameters and their defaults."""

    name: str
    scorer: Scorer
    defaults: Mapping[str, float] = field(default_factory=dict)
    summary: str = ""

    def score(
        self, cols: Columns, now: float, params: Mapping[str, float] | None = None
    ) -> Values:
        """Values for every row, with `params` overriding the defaults."""
        merged = {**self.defaults, **(params or {})}
        return self.scorer(cols, now, merged)


POLICIES: dict[str, Policy] = {}


def register(name: str, defaults: Mapping[str, float], summary: str) -> Callable[[Scorer], Scorer]:
    """Decorator: add a scorer to POLICIES under `name`."""

    def add(fn: Scorer) -> Scorer:
        POLICIES[name] = Policy(name, fn, dict(defaults), summary)
        return fn

    return add


def _idle_seconds(cols: Columns, now: float) -> Values:
    # The engine falls back to created_at until the first hit writes last_used.
    last = np.where(cols["last_used"] > 0, cols["last_used"], cols["created_at"])
    return np.maximum(now - last.astype(np.float64), 0.0)


def _reason_is(cols: Columns, *reasons: Reason) -> npt.NDArray[np.bool_]:
    return np.isin(cols["reason"], [int(r) for r in reasons])


ENGINE_HALF_LIFE_S = 6 * HOUR  # ds4_kvstore.c: hits fade with a 6 h half-life


@register("ds4", {}, "the engine's own eviction score (spec §3), the baseline to beat")
def engine_score(cols: Columns, now: float, _params: Mapping[str, float]) -> Values:
    """(h + 1) * tokens / size, h = hits decayed with a 6 h half-life (0 below
    0.01), doubled for cold/evict/shutdown as current engines do."""
    hits = cols["hits"] * np.exp2(-_idle_seconds(cols, now) / ENGINE_HALF_LIFE_S)
    hits = np.where(hits < 0.01, 0.0, hits)
    size = np.maximum(cols["size"].astype(np.float64), 1.0)
    score = (hits + 1.0) * cols["tokens"] / size
    return np.where(_reason_is(cols, Reason.COLD, Reason.EVICT, Reason.SHUTDOWN), score * 2, score)


PREFILL_DEFAULTS: Mapping[str, float] = {
    # Evidence of reuse: a prefix hit daily must not look new every morning,
    # so hits fade over days, not the engine's 6 hours.
    "hit_half_life": 7 * DAY,
    # Chance of any future hit fades with idle time (one-shot chats).
    "idle_half_life": 2 * DAY,
    # Prior hits by reason: a cold anchor (shared system prompt) serves every
    # new session; an evict save of a tool session often never matches.
    "prior_cold": 2.0,
    "prior_continued": 1.0,
    "prior_evict": 0.3,
    "prior_shutdown": 1.0,
    "prior_other": 0.5,
    # A strict prefix of a compatible longer snapshot only serves prompts that
    # diverge between the two ends.
    "covered_factor": 0.3,
    # Over this many tokens the engine consumes a snapshot on its first hit, so
    # it can save prefill at most once.
    "consume_tokens": 30000,
    # Files of the older format (ABI 0) that current engines never load.
    "legacy_factor": 0.25,
}


@register("prefill", PREFILL_DEFAULTS, "expected prefill tokens saved per byte (default)")
def prefill_value(cols: Columns, now: float, p: Mapping[str, float]) -> Values:
    """Expected future hits times tokens saved per hit, per byte held."""
    idle = _idle_seconds(cols, now)
    hits = cols["hits"] * np.exp2(-idle / p["hit_half_life"])
    reason = cols["reason"]
    prior = np.full(len(cols), p["prior_other"])
    for r, key in (
        (Reason.COLD, "prior_cold"),
        (Reason.CONTINUED, "prior_continued"),
        (Reason.EVICT, "prior_evict"),
        (Reason.SHUTDOWN, "prior_shutdown"),
    ):
        prior[reason == int(r)] = p[key]
    expected = (prior + hits) * np.exp2(-idle / p["idle_half_life"])
    once = cols["tokens"] > p["consume_tokens"]
    expected = np.where(once, np.minimum(expected, 1.0), expected)
    expected = np.where(cols["covered"], expected * p["covered_factor"], expected)
    expected = np.where(cols["abi"] == 0, expected * p["legacy_factor"], expected)
    size = np.maximum(cols["size"].astype(np.float64), 1.0)
    return expected * cols["tokens"] / size


DEFAULT_POLICY = "prefill"
