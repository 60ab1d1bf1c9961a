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
from typing import Any

import numpy as np
import numpy.typing as npt

from kvgroomd.core.index import Columns
from kvgroomd.format.header import EXT_TOOL_MAP, Reason

Values = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Clock:
    """When a policy judges: wall time (`now`, Unix seconds, which header
    times are in) and the cache's own activity (`activity`: bytes landed so
    far, which each row's `act` stamp is in). A policy that measures idleness
    in activity decides the same whatever the pace of the traffic."""

    now: float
    activity: int = 0


Scorer = Callable[[Columns, Clock, Mapping[str, float]], Values]

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
        self, cols: Columns, clock: Clock, params: Mapping[str, float] | None = None
    ) -> Values:
        """Values for every row, with `params` overriding the defaults."""
        merged = {**self.defaults, **(params or {})}
        return self.scorer(cols, clock, merged)


POLICIES: dict[str, Policy] = {}


def register(name: str, defaults: Mapping[str, float], summary: str) -> Callable[[Scorer], Scorer]:
    """Decorator: add a scorer to POLICIES under `name`."""

    def add(fn: Scorer) -> Scorer:
        POLICIES[name] = Policy(name, fn, dict(defaults), summary)
        return fn

    return add


def _reason_is(cols: Columns, *reasons: Reason) -> npt.NDArray[np.bool_]:
    return np.isin(cols["reason"], [int(r) for r in reasons])


ENGINE_HALF_LIFE_S = 6 * HOUR  # DS4_KVSTORE_HIT_HALF_LIFE_SECONDS: hits fade with a 6 h half-life
ENGINE_MIN_HITS = 0.01  # KV_CACHE_MIN_EFFECTIVE_HITS: decayed hits below this count as 0
ENGINE_ANCHOR_FACTOR = 2.0  # current engines: cold/evict/shutdown scores x2
ENGINE_SUPERSEDED_MIN = 0.05  # current engines: a continued prefix of the incoming file
ENGINE_SUPERSEDED_HITS = 0.45  # ... is scored x (0.05 + 0.45 h/(h+1))
_ANCHORS = [int(Reason.COLD), int(Reason.EVICT), int(Reason.SHUTDOWN)]


def engine_scores(hits: npt.NDArray[Any], last_used: npt.NDArray[Any],  # noqa: PLR0917 - columns
                  created_at: npt.NDArray[Any], tokens: npt.NDArray[Any],
                  size: npt.NDArray[Any], reason: npt.NDArray[Any], now: float, *,
                  current: bool = True,
                  superseded: npt.NDArray[np.bool_] | None = None) -> Values:  # fmt: skip
    """ds4_kvstore_entry_eviction_score for every entry: the lowest goes first.

    The one copy of the engine's score (spec §3), used by the `ds4` policy and
    by the engine model (kvgroomd.sim.engine). `(h + 1) * tokens / size`, with
    `h = hits * 2^(-(now - used_at) / 6h)` when `now > used_at` (0 below 0.01;
    `used_at` is last_used, else created_at; h = 0 when both are 0), 0 for an
    empty file. Current engines (`current`) double cold/evict/shutdown entries
    and multiply a `continued` entry the incoming file supersedes
    (`superseded`) by `0.05 + 0.45 * h / (h + 1)`.
    """
    used = np.where(last_used > 0, last_used, created_at).astype(np.float64)
    h = hits.astype(np.float64)
    decayed = h * np.exp2(-(now - used) / ENGINE_HALF_LIFE_S)
    decayed = np.where(decayed < ENGINE_MIN_HITS, 0.0, decayed)
    h = np.where(used == 0, 0.0, np.where(now > used, decayed, h))
    sizes = size.astype(np.float64)
    score = np.where(sizes > 0, (h + 1.0) * tokens / np.maximum(sizes, 1.0), 0.0)
    if current:
        score = np.where(np.isin(reason, _ANCHORS), score * ENGINE_ANCHOR_FACTOR, score)
        if superseded is not None:
            factor = ENGINE_SUPERSEDED_MIN + ENGINE_SUPERSEDED_HITS * (h / (h + 1.0))
            score = np.where(superseded, score * factor, score)
    return np.asarray(score, dtype=np.float64)


@register("ds4", {}, "the engine's own eviction score (spec §3), the baseline to beat")
def engine_score(cols: Columns, clock: Clock, _params: Mapping[str, float]) -> Values:
    """The current engine's score (`engine_scores`) of every row."""
    return engine_scores(cols["hits"], cols["last_used"], cols["created_at"], cols["tokens"],
                         cols["size"], cols["reason"], clock.now)  # fmt: skip


# The default policy. Each value was chosen by replaying the interleaved-agent
# generator, the adversarial generators and the scenario library
# (`kvgroomd simulate`); docs/policy.md gives the measurements. Idleness is
# measured on the cache's own clock (`Clock.activity`, bytes landed, against
# each row's `act` stamp), in *turnovers*: bytes landed since the file was
# last used, over the bytes the directory holds. No wall time: the same
# traffic replayed faster or slower gets the same decisions.
PREFILL_DEFAULTS: Mapping[str, float] = {
    # The chance of any further hit halves per this many turnovers of idleness:
    # a conversation is resumed while the cache still remembers it. Long
    # prefills written rung by rung count every rung as a landing: six
    # conversations re-prefilling up to 100k tokens run the clock by two
    # turnovers a request, and 1 forgot them before they came back. 2 keeps
    # dead short saves too long (`cold-anchor-evicted` falls below the
    # engine's own score with supersession).
    "idle_half_turnovers": 1.5,
    # Hits are evidence of reuse; they fade over this many turnovers.
    "hit_half_turnovers": 4.0,
    # Prior hits of a file never hit yet, by reason. A chat anchor (a cold
    # store that ends at the shared system prompt) serves every new session.
    "prior_cold": 4.0,
    # The engine's boundary alignment: a cold file whose token count is a
    # multiple of it is a trimmed whole prompt, not an anchor, and is valued
    # like a continued file.
    "align_tokens": 2048,
    # A continued file is a mid-prefill frontier; under an evict save it is the
    # pre-divergence prefix (a second question on the same document).
    "prior_continued": 0.5,
    # An evict save is the conversation the user just switched away from: the
    # one most likely to come back next.
    "prior_evict": 1.0,
    # A shutdown save is the conversation the restart interrupted.
    "prior_shutdown": 2.0,
    # Unknown and agent reasons (never evicted by the budget anyway).
    "prior_other": 0.5,
    # An evict or shutdown save with a tool-id map trailer (ext_flags bit 0)
    # holds sampled tool calls the client never sends back: its prior is
    # multiplied by this.
    "tool_factor": 0.05,
    # A file of a text family (same first 64 bytes) that never served a hit,
    # none of it: it shares nothing anybody asked for again (a one-shot
    # document and its save). Its prior is multiplied by this, so being big
    # never makes it outrank a hit anchor or a fresh conversation save.
    "orphan_factor": 0.2,
    # The share of saves the priors above assume to be used again. A save's
    # siblings (the saves that extended the same longest earlier file,
    # core/branches.py) say how likely it is: (used + 1) / (used + unused + 2)
    # (the rule of succession: 1/2 without evidence). Below this share the
    # prior is scaled by estimate / share: the one-shot questions on one
    # document go first, however alike their saves and a conversation's look.
    "sibling_reuse": 1 / 3,
    # A strict prefix of a compatible longer snapshot only serves prompts that
    # diverge between the two ends: rare for an older save of a conversation
    # that went on (an evict/shutdown save, a whole-prompt cold). Not so for a
    # chat anchor nor a continued file (the pre-divergence prefix).
    "covered_factor": 0.1,
    # Over this many tokens the engine consumes a snapshot on its first hit
    # (cold_max_tokens), so it can save prefill at most once.
    "consume_tokens": 30000,
    # Files of the older format (ABI 0) that current engines never load.
    "legacy_factor": 0.25,
}


_SAVE = np.zeros(256, dtype=bool)  # reason code -> a save of a live session
_SAVE[[int(Reason.EVICT), int(Reason.SHUTDOWN)]] = True


@register("prefill", PREFILL_DEFAULTS, "expected prefill tokens saved per byte (default)")
def prefill_value(cols: Columns, clock: Clock, p: Mapping[str, float]) -> Values:
    """Expected future hits times tokens saved per hit, per byte held:

    value = (prior[reason] + hits * 2^(-t / hit_half_turnovers))
            * 2^(-t / idle_half_turnovers) * tokens / size,

    t = (clock.activity - act) / bytes held: turnovers since the file last
    landed or served a hit. Expected hits are capped at 1 over consume_tokens;
    priors are discounted for tool saves, for files of a text family that
    never served a hit and for saves whose siblings were seldom used again;
    stale covered saves and legacy files are discounted (see
    PREFILL_DEFAULTS).
    """
    size = np.maximum(cols["size"].astype(np.float64), 1.0)
    held = max(float(size.sum()), 1.0)
    idle = np.maximum(float(clock.activity) - cols["act"].astype(np.float64), 0.0) / held
    hits = cols["hits"].astype(np.float64)
    recent_hits = hits * np.exp2(-idle / p["hit_half_turnovers"])
    reason = cols["reason"]
    by_reason = np.full(256, p["prior_other"])  # reason code -> prior: one gather
    for r, key in ((Reason.COLD, "prior_cold"), (Reason.CONTINUED, "prior_continued"),
                   (Reason.EVICT, "prior_evict"), (Reason.SHUTDOWN, "prior_shutdown")):  # fmt: skip
        by_reason[int(r)] = p[key]
    prior = by_reason[reason]
    tokens = cols["tokens"].astype(np.int64)
    cold = reason == int(Reason.COLD)
    anchor = cold & (tokens % max(int(p["align_tokens"]), 1) != 0)
    prior = np.where(cold & ~anchor, p["prior_continued"], prior)
    tool_save = ((cols["ext_flags"] & EXT_TOOL_MAP) != 0) & _SAVE[reason]
    prior = np.where(tool_save, prior * p["tool_factor"], prior)
    # A text family (first 64 bytes) none of whose files served a hit: few
    # files have hits, so test membership in their heads (no sort of all rows).
    heads = cols["head"]
    served = np.isin(heads, heads[hits > 0])
    prior = np.where(served, prior, prior * p["orphan_factor"])
    sib_used = cols["sib_used"].astype(np.float64)
    reuse = (sib_used + 1.0) / (sib_used + cols["sib_unused"] + 2.0)
    prior = prior * np.minimum(reuse / p["sibling_reuse"], 1.0)
    expected = (prior + recent_hits) * np.exp2(-idle / p["idle_half_turnovers"])
    expected = np.where(tokens > p["consume_tokens"], np.minimum(expected, 1.0), expected)
    stale = cols["covered"] & ~anchor & (reason != int(Reason.CONTINUED))
    expected = np.where(stale, expected * p["covered_factor"], expected)
    expected = np.where(cols["abi"] == 0, expected * p["legacy_factor"], expected)
    return np.asarray(expected * tokens / size, dtype=np.float64)


DEFAULT_POLICY = "prefill"
